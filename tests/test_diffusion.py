"""Noise schedules against the numbers and closed forms of algorithms.md, each run jitted and eagerly (chex
variants): the schedule maths must give the same answers inside and outside jit."""
import chex
import jax.numpy as jnp
import numpy as np

from common.diffusion import VPContinuous, VPDiscrete, eps_matching_loss, noise


class ScheduleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_discrete_schedule_matches_the_paper_numbers(self):
    s = VPDiscrete(15)
    np.testing.assert_allclose(s.alpha_bars[0], 0.9717, atol=1e-4)
    np.testing.assert_allclose(s.alpha_bars[-1], 0.0064, atol=1e-4)
    t = np.arange(1, 16)
    alphas = np.exp(-0.1 / 15 - 0.5 * 9.9 * (2 * t - 1) / 15**2)
    np.testing.assert_allclose(s.alphas, alphas, rtol=1e-6)
    np.testing.assert_allclose(s.betas, 1 - alphas, rtol=1e-5)
    # The continuous view passes through the grid: t = (i + 1) / T <-> step index i.
    a, sig = self.variant(s.alpha_sigma)(jnp.asarray(t / 15.0))
    np.testing.assert_allclose(a, np.sqrt(np.cumprod(alphas)), rtol=1e-5)
    np.testing.assert_allclose(a**2 + sig**2, 1.0, rtol=1e-5)
    np.testing.assert_allclose(self.variant(s.model_time)(jnp.asarray(t / 15.0)), t - 1, atol=1e-5)
    np.testing.assert_allclose(self.variant(s.index_alpha_sigma)(jnp.arange(15))[0], a, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_continuous_schedule_closed_form_and_inverse(self):
    s = VPContinuous()
    t = np.linspace(1e-3, 1.0, 50)
    log_alpha = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    a, sig = self.variant(s.alpha_sigma)(jnp.asarray(t))
    np.testing.assert_allclose(a, np.exp(log_alpha), rtol=1e-5)
    np.testing.assert_allclose(sig, np.sqrt(1 - np.exp(2 * log_alpha)), rtol=1e-4)
    for schedule, ts in ((s, t), (VPDiscrete(15), np.linspace(1 / 15, 1.0, 40))):
      lam = self.variant(schedule.log_snr)(jnp.asarray(ts))
      assert np.all(np.diff(np.asarray(lam)) < 0)  # log-SNR falls with t
      np.testing.assert_allclose(self.variant(schedule.t_from_log_snr)(lam), ts, rtol=1e-3, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_noise_and_eps_loss(self):
    x0, eps = jnp.ones((3, 2)), jnp.full((3, 2), 2.0)
    noised = self.variant(noise)(x0, eps, jnp.array([1.0, 0.5, 0.0]), jnp.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(noised, [[1, 1], [1.5, 1.5], [2, 2]])
    # Mean over the batch of the squared error summed over dims.
    np.testing.assert_allclose(self.variant(eps_matching_loss)(jnp.zeros((4, 3)), jnp.ones((4, 3))), 3.0)
