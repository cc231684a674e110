"""Masks matter: on locomotion-shaped data (episodes that end in falls), the IQL critic learns the discounted
returns-to-go near the falls, and losing the terminal flags or shifting them by one row changes what it learns
measurably (far beyond the seed-to-seed spread)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common.data import OfflineData
from common.iql import init_critic, make_critic_step

OBS_DIM, ACTION_DIM, DISCOUNT = 11, 3, 0.99
NEAR = 3  # states within this many steps of a fall are compared


def falling_episodes(num_episodes: int = 48, seed: int = 0):
  """Hopper-shaped data: each episode of 6-12 steps loses height and tilts until it falls (the last transition is
  terminal; how close the fall is can be read from the state);
  observation = [height, tilt, 9 small noise features], action = a fixed function of the state (one action per
  state, so V = Q = the return-to-go), reward = 1 alive bonus + a small forward term. Returns raw arrays with
  terminals [N] and the discounted return-to-go of every row, and the rows within NEAR steps of a fall."""
  rng = np.random.default_rng(seed)
  obs, nxt, rew, term, rtg, near = [], [], [], [], [], []
  for _ in range(num_episodes):
    length = int(rng.integers(6, 13))
    to_fall = length - np.arange(length + 1)  # steps left before the fall; 0 in the fallen state
    height = np.minimum(1.25, 0.5 + 0.15 * to_fall) + 0.01 * rng.normal(size=length + 1)
    tilt = 0.1 * np.maximum(0, 6 - to_fall) + 0.01 * rng.normal(size=length + 1)
    states = np.concatenate([height[:, None], tilt[:, None], 0.05 * rng.normal(size=(length + 1, OBS_DIM - 2))], 1)
    r = 1.0 + 0.1 * height[:-1]
    obs.append(states[:-1]), nxt.append(states[1:]), rew.append(r)
    t = np.zeros(length)
    t[-1] = 1.0
    term.append(t)
    g, out = 0.0, np.zeros(length)
    for i in reversed(range(length)):
      g = r[i] + DISCOUNT * g
      out[i] = g
    rtg.append(out)
    near.append(np.arange(length) >= length - NEAR)
  cat = lambda xs: np.concatenate(xs).astype(np.float32)
  observations = cat(obs)
  actions = np.tanh(observations[:, :ACTION_DIM] @ np.array([[1.0, -0.5, 0.3], [0.2, 1.0, -1.0], [0.5, 0.1, 0.7]]))
  arrays = dict(observations=observations, actions=actions.astype(np.float32), rewards=cat(rew),
                next_observations=cat(nxt), terminals=cat(term))
  return arrays, cat(rtg), np.concatenate(near)


def to_data(arrays, terminals):
  return OfflineData(observations=jnp.asarray(arrays["observations"]), actions=jnp.asarray(arrays["actions"]),
                     rewards=jnp.asarray(arrays["rewards"]), next_observations=jnp.asarray(arrays["next_observations"]),
                     masks=jnp.asarray(1.0 - terminals, jnp.float32))


CONFIG = ml_collections.ConfigDict(dict(
    hidden=(64, 64), value_layer_norm=False, lr=1e-3, expectile=0.7, discount=DISCOUNT, polyak=0.05,
    batch_size=256))
STEPS = 600


@jax.jit
def learned_values(data: OfflineData, seed: jax.Array) -> jax.Array:
  """V(s) of every row after STEPS IQL critic steps.  -> [N]"""
  key = jax.random.PRNGKey(seed)
  state = init_critic(key, OBS_DIM, ACTION_DIM, CONFIG)
  step = make_critic_step(CONFIG)

  def body(state, n):
    return step(state, data, jax.random.fold_in(key, n))[0], None

  state, _ = jax.lax.scan(body, state, jnp.arange(STEPS))
  return state.v.apply_fn(state.v.params, data.observations)


def test_lost_or_shifted_terminal_flags_change_the_critic_near_falls():
  arrays, returns_to_go, near = falling_episodes()
  terminals = arrays["terminals"]
  correct = [np.asarray(learned_values(to_data(arrays, terminals), s)) for s in (0, 1)]
  mutants = {
      "lost": np.zeros_like(terminals),
      "shifted one row earlier": np.roll(terminals, -1),
      "shifted one row later": np.roll(terminals, 1),
  }
  err = lambda v: float(np.mean(np.abs(v[near] - returns_to_go[near])))
  # Oracle: with the true flags the critic is near the closed-form discounted returns-to-go next to every fall.
  assert err(correct[0]) < 0.3 and err(correct[1]) < 0.3, (err(correct[0]), err(correct[1]))
  seed_spread = float(np.mean(np.abs(correct[0][near] - correct[1][near])))
  for name, flags in mutants.items():
    v = np.asarray(learned_values(to_data(arrays, flags), 0))
    change = float(np.mean(np.abs(v[near] - correct[0][near])))
    assert change > max(0.5, 5 * seed_spread), (name, change, seed_spread)
    assert err(v) > 2 * err(correct[0]), (name, err(v), err(correct[0]))
