"""A small IQL critic stage trained in a process of its own, as an entry point runs one (signal handlers, exit
statuses), for the tests that signal it, kill it or start a second one beside it.

  python -m tests.critic_process WORKDIR NUM_STEPS STEPS_PER_CALL CHECKPOINT_EVERY [MAX_RUNTIME_S]

Writes WORKDIR/pid at start and WORKDIR/final.npz (every leaf of the final state) at the end.
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def critic_stage():
  """(step function, initial state, data, keys) of the run: 2 seeds of test_training's small critic, initialised in
  one jitted call (an eager vmapped init compiles op by op: seconds in every new process)."""
  import jax

  from common import iql
  from common.training import init_seeds, seed_keys
  from tests.test_training import random_data, small_config

  data, config = random_data(), small_config()
  keys = seed_keys([0, 1])
  state = jax.jit(lambda k: init_seeds(lambda key: iql.init_critic(key, data.obs_dim, data.action_dim, config), k))(
      keys)
  return iql.make_critic_step(config), state, data, keys


def main(argv):
  workdir, num_steps, steps_per_call, checkpoint_every = argv[0], *(int(a) for a in argv[1:4])
  max_runtime_s = float(argv[4]) if len(argv) > 4 else 0.0
  from common import interrupts

  interrupts.install_process_handlers()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "pid"), "w") as f:
    f.write(str(os.getpid()))
  import jax
  import numpy as np

  from common.training import Trainer

  step, state, data, keys = critic_stage()
  trainer = Trainer(step, num_steps=num_steps, steps_per_call=steps_per_call, checkpoint_every=checkpoint_every,
                    workdir=workdir, progress=False, max_runtime_s=max_runtime_s)
  try:
    final = trainer.run(state, data, keys)
  except KeyboardInterrupt as e:
    print(f"{interrupts.stop_message(e)}; progress is saved in {workdir}", file=sys.stderr, flush=True)
    sys.exit(interrupts.exit_code(e))
  leaves = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(final))}
  np.savez(os.path.join(workdir, "final.npz"), **leaves)


if __name__ == "__main__":
  main(sys.argv[1:])
