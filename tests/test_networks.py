"""Parameter counts of the shared architectures (algorithms.md), from closed-form layer sizes; the forward passes
run jitted and eagerly (chex variants)."""
import functools

import chex
import jax
import jax.numpy as jnp

from common.networks import ConditionalEpsNet, DiracPolicy, param_count

S, A = 11, 3
dense = lambda i, o: i * o + o
BLOCKS = 3 * (2 * 256 + dense(256, 1024) + dense(1024, 256))  # LayerNorm + Dense 4h + Dense h, three blocks
SWG_NET = ConditionalEpsNet(out_dim=A, time_embedding="learnable", time_embed_dim=64, time_features=(256, 256),
                            activation="swish", aux_head_after_block=2)


@functools.lru_cache(maxsize=None)
def init(net, *shapes):
  """Initialised once per architecture (eagerly) and shared by both variants: only apply is under test there."""
  return net.init(jax.random.PRNGKey(0), *[jnp.zeros(s) for s in shapes])


class ArchitectureTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_srpo_behaviour_eps_net_count(self):
    net = ConditionalEpsNet(out_dim=A)
    expected = 32 + dense(64, 128) + dense(128, 128) + dense(A + S + 128, 256) + BLOCKS + dense(256, A)
    params = init(net, (1, A), (1,), (1, S))
    assert param_count(params) == expected == 1_640_483
    out = self.variant(net.apply)(params, jnp.zeros((5, A)), jnp.full((5,), 0.5), jnp.zeros((5, S)))
    chex.assert_shape(out, (5, A))
    chex.assert_tree_all_finite(out)

  @chex.variants(with_jit=True, without_jit=True)
  def test_swg_joint_eps_net_count_with_weight_head(self):
    expected = (64 + dense(128, 256) + dense(256, 256) + dense(A + 1 + S + 256, 256) + BLOCKS + dense(256, A)
                + dense(256, 256) + dense(256, 1))
    params = init(SWG_NET, (1, A + 1), (1,), (1, S))
    assert param_count(params) == expected == 1_813_572
    chex.assert_shape(self.variant(SWG_NET.apply)(params, jnp.zeros((5, A + 1)), jnp.zeros((5,)), jnp.zeros((5, S))),
                      (5, A + 1))

  @chex.variants(with_jit=True, without_jit=True)
  def test_dirac_policy_count_and_range(self):
    for layers in (2, 4):
      params = init(DiracPolicy(A, 256, layers), (1, S))
      assert param_count(params) == dense(S, 256) + (layers - 1) * dense(256, 256) + dense(256, A)
    out = self.variant(DiracPolicy(A).apply)(init(DiracPolicy(A), (1, S)), 100 * jnp.ones((4, S)))
    chex.assert_shape(out, (4, A))
    assert float(jnp.max(jnp.abs(out))) <= 1.0


def test_mish_and_its_gradient_match_the_closed_form_and_the_backward_pass_recomputes_it():
  """mish(x) = x tanh(softplus(x)), mish'(x) = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2). The network's mish is
  rematerialised (jax.checkpoint): its backward pass recomputes softplus and tanh from x instead of saving them."""
  from common.networks import mish

  x = jnp.linspace(-6.0, 6.0, 241)
  sp = jnp.log1p(jnp.exp(x))
  chex.assert_trees_all_close(mish(x), x * jnp.tanh(sp), rtol=1e-6, atol=1e-7)
  want = jnp.tanh(sp) + x * jax.nn.sigmoid(x) * (1.0 - jnp.tanh(sp) ** 2)
  chex.assert_trees_all_close(jax.vmap(jax.grad(mish))(x), want, rtol=1e-5, atol=1e-6)
  grad_jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(mish(v))))(x)
  assert any(e.primitive.name.startswith(("remat", "checkpoint")) for e in grad_jaxpr.jaxpr.eqns)
