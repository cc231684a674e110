"""Official SRPO PyTorch checkpoints -> flax: modules with the official key layout and architecture, built here,
saved, imported, and compared on random inputs."""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", exc_type=ImportError)
nn = torch.nn

from common.networks import ConditionalEpsNet, DiracPolicy, TwinQ, ValueNet  # noqa: E402
from srpo_jax import torch_import  # noqa: E402


class FourierTime(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.W = nn.Parameter(torch.randn(dim // 2) * 30.0, requires_grad=False)

  def forward(self, t):
    proj = t[..., None] * self.W[None, :] * 2 * np.pi
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Block(nn.Module):
  def __init__(self, h, ln_eps=1e-5):
    super().__init__()
    self.layer_norm = nn.LayerNorm(h, eps=ln_eps)
    self.fc1 = nn.Linear(h, 4 * h)
    self.fc2 = nn.Linear(4 * h, h)
    self.residual = nn.Linear(h, h)  # present in the checkpoints, unused for equal shapes
    self.dropout = nn.Dropout(0.1)

  def forward(self, x):
    return x + self.fc2(nn.functional.mish(self.fc1(self.layer_norm(self.dropout(x)))))


class Trunk(nn.Module):
  def __init__(self, in_dim, out_dim, h=256, blocks=3, ln_eps=1e-5):
    super().__init__()
    self.fc = nn.Linear(in_dim + 128, h)
    self.blocks = nn.ModuleList([Block(h, ln_eps) for _ in range(blocks)])
    self.out_fc = nn.Linear(h, out_dim)

  def forward(self, x):
    x = self.fc(x)
    for b in self.blocks:
      x = b(x)
    return self.out_fc(nn.functional.mish(x))


class ScoreNet(nn.Module):
  def __init__(self, obs_dim, action_dim, ln_eps=1e-5):
    super().__init__()
    self.embed = nn.Sequential(FourierTime(64))
    self.cond_model = nn.Sequential(nn.Linear(64, 128), nn.Mish(), nn.Linear(128, 128))
    self.main = Trunk(obs_dim + action_dim, action_dim, ln_eps=ln_eps)

  def forward(self, x, t, s):
    return self.main(torch.cat([x, s, self.cond_model(self.embed(t))], dim=-1))


def mlp(dims):
  layers = []
  for i in range(len(dims) - 1):
    layers.append(nn.Linear(dims[i], dims[i + 1]))
    if i + 2 < len(dims):
      layers.append(nn.ReLU())
  return nn.Sequential(*layers)


class Twin(nn.Module):
  def __init__(self, obs_dim, action_dim):
    super().__init__()
    self.q1 = mlp([obs_dim + action_dim, 256, 256, 1])
    self.q2 = mlp([obs_dim + action_dim, 256, 256, 1])

  def forward(self, a, s):
    x = torch.cat([a, s], -1)
    return self.q1(x)[:, 0], self.q2(x)[:, 0]


class Critic(nn.Module):
  def __init__(self, obs_dim, action_dim):
    super().__init__()
    self.q0 = Twin(obs_dim, action_dim)
    self.q0_target = Twin(obs_dim, action_dim)
    self.vf = nn.Module()
    self.vf.v = mlp([obs_dim, 256, 256, 1])


class Holder(nn.Module):
  def __init__(self, obs_dim, action_dim, ln_eps=1e-5):
    super().__init__()
    self.diffusion_behavior = ScoreNet(obs_dim, action_dim, ln_eps)
    self.SRPO_policy = nn.Module()
    self.SRPO_policy.net = nn.Sequential(*mlp([obs_dim, 256, 256, 256, 256, action_dim]), nn.Tanh())


S, A, B = 11, 3, 64


def t2n(x):
  return x.detach().numpy()


# The official nets use torch's LayerNorm eps 1e-5; the imported architecture carries it (flax defaults to 1e-6).
def test_behavior_checkpoint_matches_torch(tmp_path, ln_eps=1e-5, tol=1e-5):
  torch.manual_seed(0)
  holder = Holder(S, A, ln_eps).eval()
  with torch.no_grad():  # non-trivial LayerNorm affine params
    for blk in holder.diffusion_behavior.main.blocks:
      blk.layer_norm.weight.normal_(1.0, 0.2)
      blk.layer_norm.bias.normal_(0.0, 0.2)
  path = tmp_path / "behavior_ckpt200.pth"
  torch.save(holder.state_dict(), path)
  sd = torch_import.load_state_dict(str(path))
  assert "diffusion_behavior.main.blocks.2.residual.weight" in sd
  params, arch = torch_import.convert_behavior(sd)
  assert arch == dict(action_dim=A, obs_dim=S, hidden=256, num_blocks=3, time_embed_dim=64, layer_norm_eps=1e-5)

  rng = np.random.default_rng(0)
  x, s = rng.normal(size=(B, A)).astype(np.float32), rng.normal(size=(B, S)).astype(np.float32)
  t = rng.uniform(1e-3, 1, size=(B,)).astype(np.float32)
  ref = t2n(holder.diffusion_behavior(torch.tensor(x), torch.tensor(t), torch.tensor(s)))
  net = ConditionalEpsNet(out_dim=A, layer_norm_eps=arch["layer_norm_eps"])
  out = np.asarray(net.apply(params, jnp.asarray(x), jnp.asarray(t), jnp.asarray(s)))
  np.testing.assert_allclose(out, ref, atol=tol, rtol=tol)

  pol_params, pol_arch = torch_import.convert_policy(sd)
  assert pol_arch == dict(action_dim=A, hidden=256, num_layers=4)
  ref = t2n(holder.SRPO_policy.net(torch.tensor(s)))
  out = DiracPolicy(A, 256, 4).apply(pol_params, jnp.asarray(s))
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_critic_checkpoint_matches_torch(tmp_path):
  torch.manual_seed(1)
  critic = Critic(S, A)
  path = tmp_path / "critic_ckpt150.pth"
  torch.save(critic.state_dict(), path)
  imported = torch_import.import_critic(str(path))
  assert (imported["hidden"], imported["obs_dim"], imported["action_dim"]) == ((256, 256), S, A)

  rng = np.random.default_rng(1)
  s, a = rng.normal(size=(B, S)).astype(np.float32), rng.uniform(-1, 1, size=(B, A)).astype(np.float32)
  twin = TwinQ(hidden=imported["hidden"])
  for name, module in (("q_params", critic.q0), ("q_target_params", critic.q0_target)):
    ref = np.stack([t2n(q) for q in module(torch.tensor(a), torch.tensor(s))])
    out = twin.apply(imported[name], jnp.asarray(s), jnp.asarray(a))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  ref_v = t2n(critic.vf.v(torch.tensor(s)))[:, 0]
  np.testing.assert_allclose(ValueNet().apply(imported["v_params"], jnp.asarray(s)), ref_v, atol=1e-5, rtol=1e-5)


def test_bad_checkpoint_names_the_missing_key():
  holder = Holder(S, A)
  sd = {k: v.numpy() for k, v in holder.state_dict().items() if "main.out_fc.weight" not in k}
  with pytest.raises(torch_import.CheckpointFormatError, match="main.out_fc.weight"):
    torch_import.convert_behavior(sd)
  critic_sd = {k: v.numpy() for k, v in Critic(S, A).state_dict().items() if not k.startswith("q0_target")}
  with pytest.raises(torch_import.CheckpointFormatError, match="q0_target"):
    torch_import.convert_critic(critic_sd)


def test_official_eps_and_q_feed_policy_extraction():
  torch.manual_seed(2)
  holder, critic = Holder(S, A, ln_eps=1e-5).eval(), Critic(S, A)
  bsd = {k: v.numpy() for k, v in holder.state_dict().items()}
  csd = {k: v.numpy() for k, v in critic.state_dict().items()}
  eps_fn, q_fn, arch = torch_import.official_eps_and_q(bsd, csd)
  rng = np.random.default_rng(2)
  x, s = rng.normal(size=(8, A)).astype(np.float32), rng.normal(size=(8, S)).astype(np.float32)
  t = rng.uniform(0.02, 0.98, size=(8,)).astype(np.float32)
  ref = t2n(holder.diffusion_behavior(torch.tensor(x), torch.tensor(t), torch.tensor(s)))
  np.testing.assert_allclose(eps_fn(jnp.asarray(x), jnp.asarray(t), jnp.asarray(s)), ref, atol=1e-5, rtol=1e-5)
  q1, q2 = critic.q0_target(torch.tensor(x), torch.tensor(s))
  np.testing.assert_allclose(q_fn(jnp.asarray(s), jnp.asarray(x)), t2n((q1 + q2) / 2), atol=1e-5, rtol=1e-5)
  bad = {k: v for k, v in csd.items()}
  bad["vf.v.0.weight"] = np.zeros((256, S + 1), np.float32)
  with pytest.raises(torch_import.CheckpointFormatError, match="obs/action dims"):
    torch_import.official_eps_and_q(bsd, bad)
