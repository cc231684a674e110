"""--distributed and its three flags, for the entry points that train (train.py, reproduce_d4rl.py)."""
from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_bool("distributed", False, "Join a multi-process run (jax.distributed.initialize; start the same "
                    "command once per process): detected on SLURM, Open MPI and TPU pods, else give the three flags "
                    "below.")
  flags.DEFINE_string("coordinator_address", "", "With --distributed: host:port of process 0.")
  flags.DEFINE_integer("num_processes", 0, "With --distributed: how many processes take part.")
  flags.DEFINE_integer("process_id", -1, "With --distributed: this process's index, 0 .. num_processes - 1.")


def initialize_from_flags() -> None:
  """Join the processes named by the flags (before anything touches a device); a usage error for set-up flags
  without --distributed."""
  if FLAGS.distributed:
    from common import distributed
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.process_id >= 0:
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need --distributed")
