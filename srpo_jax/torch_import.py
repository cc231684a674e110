"""Import the official SRPO PyTorch checkpoints (thu-ml/SRPO) into our flax params. torch is imported lazily.

Behaviour `behavior_ckpt*.pth` (ScoreNet_IDQL under `diffusion_behavior.`):
  embed.0.W [32]                          -> GaussianFourierTime_0/frozen_W
  cond_model.{0,2}.{weight,bias}          -> MLP_0/Dense_{0,1}
  main.fc.*                               -> Dense_0            (input concat(a, s, time features): same order as ours)
  main.blocks.{i}.layer_norm.{weight,bias}-> LNResNetBlock_i/LayerNorm_0/{scale,bias}
  main.blocks.{i}.fc1.*, fc2.*            -> LNResNetBlock_i/Dense_{0,1}
  main.blocks.{i}.residual.*              -> unused: the official block only applies it when shapes differ, never here
  main.out_fc.*                           -> Dense_1
Critic `critic_ckpt*.pth` (IQL_Critic): q0.q{1,2}.{0,2,4,..}.*, q0_target.*, vf.v.{0,2,4}.*. The Q nets there read
concat(a, s); ours read concat(s, a), so the first-layer kernel rows are permuted. Policy (Dirac_Policy, optional):
`SRPO_policy.net.{0,2,..}.*` or `net.{0,2,..}.*`. Linear weights are [out, in]; flax kernels are [in, out].
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

TIME_FEATURES = 128  # width of the official cond_model output


class CheckpointFormatError(ValueError):
  """A state dict does not have the official SRPO layout; the message names the missing / odd key and shape."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """torch.load(path) on the CPU -> {key: float32 numpy array}. Accepts a bare state dict or one nested under
  'state_dict' / 'model'."""
  try:
    import torch
  except ImportError as e:  # torch is optional for everything but reading .pth files
    raise ImportError("reading official SRPO .pth checkpoints needs PyTorch: pip install torch (CPU is enough)") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping):
    raise CheckpointFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in obj.items() if hasattr(v, "detach")}


def _get(sd: Mapping[str, np.ndarray], key: str, ndim: int | None = None) -> np.ndarray:
  if key not in sd:
    near = sorted(k for k in sd if k.split(".")[0] == key.split(".")[0])[:8]
    raise CheckpointFormatError(f"missing key {key!r} (keys with the same prefix: {near or sorted(sd)[:8]})")
  x = np.asarray(sd[key], np.float32)
  if ndim is not None and x.ndim != ndim:
    raise CheckpointFormatError(f"{key} has shape {x.shape}; expected {ndim} dims")
  return x


def _dense(sd, prefix: str) -> dict:
  return {"kernel": _get(sd, prefix + ".weight", 2).T.copy(), "bias": _get(sd, prefix + ".bias", 1)}


def _sequential_linear_indices(sd, prefix: str) -> list[int]:
  """Indices i with `{prefix}.{i}.weight` present, sorted (nn.Sequential of Linear + activation layers)."""
  pat = re.compile(re.escape(prefix) + r"\.(\d+)\.weight$")
  idx = sorted(int(m.group(1)) for k in sd if (m := pat.match(k)))
  if not idx:
    raise CheckpointFormatError(f"no Linear layers under {prefix!r} (keys: {sorted(sd)[:8]} ...)")
  return idx


def _mlp(sd, prefix: str) -> dict:
  return {f"Dense_{j}": _dense(sd, f"{prefix}.{i}") for j, i in enumerate(_sequential_linear_indices(sd, prefix))}


def _strip(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  if prefix and any(k.startswith(prefix) for k in sd):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  return dict(sd)


# torch.nn.LayerNorm's default, used by the official nets (flax defaults to 1e-6).
OFFICIAL_LAYER_NORM_EPS = 1e-5


def convert_behavior(state_dict: Mapping[str, np.ndarray], prefix: str = "diffusion_behavior.") -> tuple[dict, dict]:
  """Official ScoreNet_IDQL state dict -> (flax params for `ConditionalEpsNet`, architecture dict with action_dim,
  obs_dim, hidden, num_blocks, time_embed_dim, layer_norm_eps) to build the matching behaviour config."""
  sd = _strip(state_dict, prefix)
  w = _get(sd, "embed.0.W", 1)
  params = {"GaussianFourierTime_0": {"frozen_W": w}, "MLP_0": _mlp(sd, "cond_model"),
            "Dense_0": _dense(sd, "main.fc"), "Dense_1": _dense(sd, "main.out_fc")}
  blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"main\.blocks\.(\d+)\.", k))})
  if blocks != list(range(len(blocks))) or not blocks:
    raise CheckpointFormatError(f"main.blocks indices must be 0..n-1, got {blocks}")
  for i in blocks:
    b = f"main.blocks.{i}"
    params[f"LNResNetBlock_{i}"] = {
        "LayerNorm_0": {"scale": _get(sd, b + ".layer_norm.weight", 1), "bias": _get(sd, b + ".layer_norm.bias", 1)},
        "Dense_0": _dense(sd, b + ".fc1"), "Dense_1": _dense(sd, b + ".fc2")}
  hidden = params["Dense_0"]["kernel"].shape[1]
  action_dim = params["Dense_1"]["kernel"].shape[1]
  time_features = params["MLP_0"][f"Dense_{len(params['MLP_0']) - 1}"]["kernel"].shape[1]
  obs_dim = params["Dense_0"]["kernel"].shape[0] - action_dim - time_features
  if obs_dim <= 0:
    raise CheckpointFormatError(f"main.fc.weight has input dim {params['Dense_0']['kernel'].shape[0]}, too small for "
                                f"action dim {action_dim} + {time_features} time features")
  arch = dict(action_dim=action_dim, obs_dim=obs_dim, hidden=hidden, num_blocks=len(blocks),
              time_embed_dim=2 * w.shape[0], layer_norm_eps=OFFICIAL_LAYER_NORM_EPS)
  return {"params": params}, arch


def _twin_q(sd, prefix: str, obs_dim: int) -> dict:
  nets = [_mlp(sd, f"{prefix}.q1"), _mlp(sd, f"{prefix}.q2")]
  if sorted(nets[0]) != sorted(nets[1]):
    raise CheckpointFormatError(f"{prefix}.q1 and {prefix}.q2 have different depths")
  for net in nets:  # torch reads concat(a, s): put the state rows first
    k = net["Dense_0"]["kernel"]
    action_dim = k.shape[0] - obs_dim
    if action_dim <= 0:
      raise CheckpointFormatError(f"{prefix} first layer has input dim {k.shape[0]} <= obs dim {obs_dim}")
    net["Dense_0"]["kernel"] = np.concatenate([k[action_dim:], k[:action_dim]], axis=0)
  stacked = {name: {p: np.stack([nets[0][name][p], nets[1][name][p]]) for p in ("kernel", "bias")}
             for name in nets[0]}
  return {"params": {"VmapMLP_0": stacked}}


def convert_critic(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Official IQL_Critic state dict -> {"q_params", "q_target_params" (TwinQ), "v_params" (ValueNet), "hidden",
  "obs_dim", "action_dim"}."""
  sd = dict(state_dict)
  v = _mlp(sd, "vf.v")
  obs_dim = v["Dense_0"]["kernel"].shape[0]
  q = _twin_q(sd, "q0", obs_dim)
  q_target = _twin_q(sd, "q0_target", obs_dim) if any(k.startswith("q0_target.") for k in sd) else None
  if q_target is None:
    raise CheckpointFormatError("missing q0_target.* (the target Qs SRPO's policy follows)")
  layers = q["params"]["VmapMLP_0"]
  hidden = tuple(int(layers[f"Dense_{i}"]["kernel"].shape[-1]) for i in range(len(layers) - 1))
  action_dim = int(layers["Dense_0"]["kernel"].shape[1]) - obs_dim
  return {"q_params": q, "q_target_params": q_target, "v_params": {"params": {"MLP_0": v}}, "hidden": hidden,
          "obs_dim": obs_dim, "action_dim": action_dim}


def convert_policy(state_dict: Mapping[str, np.ndarray], prefix: str = "SRPO_policy.") -> tuple[dict, dict]:
  """Official Dirac_Policy state dict -> (flax params for `DiracPolicy`, dict(action_dim, hidden, num_layers))."""
  sd = _strip(state_dict, prefix)
  mlp = _mlp(sd, "net")
  n = len(mlp)
  arch = dict(action_dim=int(mlp[f"Dense_{n - 1}"]["kernel"].shape[1]),
              hidden=int(mlp["Dense_0"]["kernel"].shape[1]), num_layers=n - 1)
  return {"params": {"MLP_0": mlp}}, arch


def import_behavior(path: str) -> tuple[dict, dict]:
  return convert_behavior(load_state_dict(path))


def import_critic(path: str) -> dict:
  return convert_critic(load_state_dict(path))


def import_policy(path: str) -> tuple[dict, dict]:
  return convert_policy(load_state_dict(path))


def official_eps_and_q(behavior_state_dict: Mapping[str, np.ndarray], critic_state_dict: Mapping[str, np.ndarray]):
  """Ready-to-use `(eps_fn(a_t, t, s), q_fn(s, a), arch)` from official state dicts (see `load_state_dict`), for
  `srpo_jax.extract_policy`: eps is the behaviour net without dropout, q the mean of the twin target Qs."""
  import jax.numpy as jnp

  from common.networks import ConditionalEpsNet, TwinQ

  b_params, arch = convert_behavior(behavior_state_dict)
  critic = convert_critic(critic_state_dict)
  if (critic["obs_dim"], critic["action_dim"]) != (arch["obs_dim"], arch["action_dim"]):
    raise CheckpointFormatError(
        f"behaviour checkpoint is for obs/action dims {arch['obs_dim']}/{arch['action_dim']} but the critic for "
        f"{critic['obs_dim']}/{critic['action_dim']}")
  net = ConditionalEpsNet(out_dim=arch["action_dim"], time_embed_dim=arch["time_embed_dim"], hidden=arch["hidden"],
                          num_blocks=arch["num_blocks"], layer_norm_eps=arch["layer_norm_eps"])
  twin = TwinQ(hidden=critic["hidden"])
  b_params = jax_tree_asarray(b_params)
  q_params = jax_tree_asarray(critic["q_target_params"])
  eps_fn = lambda a_t, t, s: net.apply(b_params, a_t, t, s, train=False)
  q_fn = lambda s, a: jnp.mean(twin.apply(q_params, s, a), axis=0)
  return eps_fn, q_fn, arch


def jax_tree_asarray(tree):
  import jax
  import jax.numpy as jnp

  return jax.tree.map(jnp.asarray, tree)
