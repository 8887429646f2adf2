import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.image import samplers

MU = jnp.array([1.5, -0.5])
S = jnp.array([0.5, 2.0])


def gaussian_velocity(x, t, y):
    """The exact velocity E[eps - x0 | x_t] of the linear path for x0 ~ N(MU, S^2)."""
    t = t[:, None]
    var = (1 - t) ** 2 * S**2 + t**2
    r = x - (1 - t) * MU
    return t / var * r - (MU + (1 - t) * S**2 / var * r)


@pytest.mark.parametrize("method,steps", [("heun", 40), ("euler", 400)])
def test_ode_reproduces_gaussian_mean_and_std(method, steps):
    x1 = jax.random.normal(jax.random.PRNGKey(0), (20000, 2))
    x0 = samplers.ode(gaussian_velocity, x1, jnp.zeros(20000, jnp.int32), steps, method)
    np.testing.assert_allclose(x0.mean(0), MU, atol=0.05)
    np.testing.assert_allclose(x0.std(0), S, rtol=0.03)


def test_sde_reproduces_gaussian_mean_and_std():
    x1 = jax.random.normal(jax.random.PRNGKey(0), (20000, 2))
    x0 = samplers.sde(gaussian_velocity, x1, jnp.zeros(20000, jnp.int32), 250, jax.random.PRNGKey(1))
    np.testing.assert_allclose(x0.mean(0), MU, atol=0.05)
    np.testing.assert_allclose(x0.std(0), S, rtol=0.04)


def test_sde_grid_and_deterministic_last_step():
    x1 = jnp.ones((1, 1))
    out = samplers.sde(lambda x, t, y: jnp.zeros_like(x), x1, jnp.zeros(1, jnp.int32), 2, jax.random.PRNGKey(0))
    # step 1 (t=1 -> 0.04): drift = -0.5*2*1*(-x/1) = x; x = 1 + 1*(-0.96) + sqrt(2*0.96) n
    n = jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[1], (1, 1))
    x = 1 - 0.96 + jnp.sqrt(2.0) * jnp.sqrt(0.96) * n
    x = x + (-0.04) * (-0.5 * 2 * 0.04 * (-x / 0.04))  # last step: drift only, to t = 0
    np.testing.assert_allclose(out, x, rtol=1e-5)


def test_cfg_with_guidance_interval():
    def model(x, t, y):
        return jnp.where((y == 10)[:, None], 0.0, 1.0) * jnp.ones_like(x)  # cond 1, null 0

    g = samplers.guided(model, 4.0, null_class=10, interval=(0.0, 0.5))
    x, y = jnp.zeros((2, 3)), jnp.array([1, 2])
    np.testing.assert_allclose(g(x, jnp.array([0.3, 0.3]), y), 4.0)  # u + 4 (c - u)
    np.testing.assert_allclose(g(x, jnp.array([0.7, 0.7]), y), 1.0)  # outside: conditional
    np.testing.assert_allclose(g(x, jnp.array([0.3, 0.7]), y), [[4.0] * 3, [1.0] * 3])
    assert samplers.guided(model, 1.0, 10) is model  # no guidance at scale 1
    # outside the interval the doubled (cond + null) batch is not evaluated at all
    sizes = []
    counting = samplers.guided(lambda x, t, y: (sizes.append(x.shape[0]), model(x, t, y))[1], 4.0, 10, (0.0, 0.5))
    jax.make_jaxpr(counting)(x, jnp.array([0.7, 0.7]), y)
    assert sorted(sizes) == [2, 4]  # both branches traced once; lax.cond runs one
    calls = []
    eager = samplers.guided(lambda x, t, y: (calls.append(x.shape[0]), model(x, t, y))[1], 4.0, 10, (0.0, 0.5))
    with jax.disable_jit():
        eager(x, jnp.array([0.7, 0.7]), y)
        eager(x, jnp.array([0.3, 0.3]), y)
    assert calls == [2, 4]
    # Euler over linspace(1, 0, 11): 5 steps start at t > 0.5 (velocity 1), 5 at t <= 0.5 (velocity 4)
    out = samplers.ode(g, jnp.zeros((2, 3)), y, 10, "euler")
    np.testing.assert_allclose(out, -(5 * 0.1 * 1 + 5 * 0.1 * 4), rtol=1e-5)


def test_bad_sampler_names():
    with pytest.raises(ValueError, match="sampler.method"):
        samplers.sample(gaussian_velocity, jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32), method="ddim", num_steps=2,
                        rng=jax.random.PRNGKey(0))


@pytest.mark.parametrize("n", [1, 4, 7])
def test_heun_is_exact_for_velocity_linear_in_t_and_skips_the_last_corrector(n):
    """v = a + b t: the trapezoid (Heun) step is exact, Euler is not. Heun's last step (to t = 0) is
    an Euler step as in the reference, so x(0) = x1 - (a + b/2) - b h^2 / 2 with h = 1/n; Euler on
    every step gives x1 - a - b (n + 1) / (2n)."""
    a, b = 0.3, 2.0
    vel = lambda x, t, y: a + b * t[:, None] * jnp.ones_like(x)
    x1, y, h = jnp.array([[1.0, -2.0]]), jnp.zeros(1, jnp.int32), 1.0 / n
    heun = samplers.ode(vel, x1, y, n, "heun")
    euler = samplers.ode(vel, x1, y, n, "euler")
    np.testing.assert_allclose(heun, x1 - (a + b / 2) - b * h**2 / 2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(euler, x1 - a - b * (n + 1) / (2 * n), rtol=1e-6, atol=1e-6)
    # the corrector is evaluated on every step but the last: 2n - 1 velocity evaluations
    calls = []
    with jax.disable_jit():
        samplers.ode(lambda x, t, y: (calls.append(float(t[0])), vel(x, t, y))[1], x1, y, n, "heun")
    assert len(calls) == 2 * n - 1 and 0.0 not in calls


def test_heun_cfg_decides_guidance_at_t_cur_for_the_corrector():
    """Reference `euler_sampler`: guidance is decided from t_cur and holds for the corrector at
    t_next. Grid 1, .75, .5, .25, 0 with interval [0, 0.5]: the step .75 -> .5 is unguided in both
    evaluations (re-deciding at t_next = 0.5 would guide its corrector)."""
    def model(x, t, y):
        return jnp.where((y == 10)[:, None], 0.0, 1.0) * jnp.ones_like(x)  # cond 1, null 0: guided 4

    g = samplers.guided(model, 4.0, null_class=10, interval=(0.0, 0.5))
    out = samplers.ode(g, jnp.zeros((2, 3)), jnp.array([1, 2]), 4, "heun")
    # steps from 1 and .75 unguided (velocity 1), from .5 and .25 guided (velocity 4)
    np.testing.assert_allclose(out, -(0.25 * 1 + 0.25 * 1 + 0.25 * 4 + 0.25 * 4), rtol=1e-6)
    # the interval is closed, as the reference's `guidance_low <= t_cur <= guidance_high`
    seen = []
    with jax.disable_jit():
        samplers.ode(samplers.guided(lambda x, t, y: (seen.append((round(float(t[0]), 4), x.shape[0])),
                                                      model(x, t, y))[1], 4.0, 10, (0.0, 0.7)),
                     jnp.zeros((2, 3)), jnp.array([1, 2]), 10, "euler")
    assert dict(seen)[0.7] == 4 and dict(seen)[0.8] == 2
