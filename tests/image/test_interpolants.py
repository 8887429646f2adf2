import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.image import interpolants


def test_linear_path_and_velocity():
    x0, eps, t = jnp.full((2, 3), 2.0), jnp.full((2, 3), -1.0), jnp.array([0.0, 0.25])
    xt, v = interpolants.interpolate("linear", x0, eps, t)
    np.testing.assert_allclose(xt[0], 2.0)
    np.testing.assert_allclose(xt[1], 0.75 * 2 + 0.25 * -1)
    np.testing.assert_allclose(v, -3.0)


def test_cosine_path_velocity_is_time_derivative():
    rng = np.random.default_rng(0)
    x0, eps = jnp.asarray(rng.normal(size=(4, 5))), jnp.asarray(rng.normal(size=(4, 5)))
    t = jnp.array([0.1, 0.3, 0.6, 0.9])
    h = 1e-3
    _, v = interpolants.interpolate("cosine", x0, eps, t)
    xp, _ = interpolants.interpolate("cosine", x0, eps, t + h)
    xm, _ = interpolants.interpolate("cosine", x0, eps, t - h)
    np.testing.assert_allclose(v, (xp - xm) / (2 * h), atol=1e-3)
    xt, _ = interpolants.interpolate("cosine", x0, eps, jnp.ones(4))
    np.testing.assert_allclose(xt, eps, atol=1e-6)


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_score_from_true_velocity_of_gaussian(path):
    # x0 ~ N(0, s^2): p_t = N(0, a^2 s^2 + sig^2); the true velocity is E[v | x] = k x with
    # k = (a a' s^2 + sig sig') / (a^2 s^2 + sig^2); the score is -x / var.
    s2, t = 0.3, jnp.array([0.2, 0.7])
    a, sig, da, dsig = interpolants.coefficients(path, t)
    var = a**2 * s2 + sig**2
    x = jnp.array([[0.5], [-1.2]])
    v = ((a * da * s2 + sig * dsig) / var)[:, None] * x
    score = interpolants.score_from_velocity(path, v, x, t)
    np.testing.assert_allclose(score, -x / var[:, None], rtol=1e-5)


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_lognormal_time_sampler_follows_its_law_on_each_path(path):
    """REPA/REED loss.py: s = exp(N(0, 1)); linear t = s / (1 + s), cosine t = 2/pi atan(s), so
    the path's log(sigma(t) / alpha(t)) is standard normal: P(T <= t) = Phi(log(sigma/alpha)(t))."""
    from scipy import stats

    t = np.asarray(interpolants.sample_time("lognormal", jax.random.PRNGKey(0), 20000, path), np.float64)
    assert 0 < t.min() and t.max() < 1
    log_snr = {"linear": lambda t: np.log(t / (1 - t)), "cosine": lambda t: np.log(np.tan(np.pi * t / 2))}
    law = lambda fn: (lambda x: stats.norm.cdf(fn(x)))
    assert stats.kstest(t, law(log_snr[path])).pvalue > 0.01
    other = "cosine" if path == "linear" else "linear"  # the other path's law is rejected
    assert stats.kstest(t, law(log_snr[other])).pvalue < 1e-6
    assert stats.kstest(t, "uniform").pvalue < 1e-6


def test_uniform_time_sampler_and_moments():
    u = np.asarray(interpolants.sample_time("uniform", jax.random.PRNGKey(0), 20000), np.float64)
    from scipy import stats

    assert stats.kstest(u, "uniform").pvalue > 0.01
    mom = jnp.concatenate([jnp.full((4000, 1, 1, 4), 1.0), jnp.full((4000, 1, 1, 4), 2.0)], axis=-1)
    x0 = interpolants.x0_from_moments(jax.random.PRNGKey(1), mom, 0.5)
    np.testing.assert_allclose(float(x0.mean()), 0.5, atol=0.02)
    np.testing.assert_allclose(float(x0.std()), 1.0, atol=0.02)
    with pytest.raises(ValueError, match="time_sampler"):
        interpolants.sample_time("beta", jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="diffusion.path"):
        interpolants.sample_time("lognormal", jax.random.PRNGKey(0), 3, "vp")
