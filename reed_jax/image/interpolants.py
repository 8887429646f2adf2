"""Interpolants between clean data (t = 0) and Gaussian noise (t = 1), time sampling, targets.

    x_t = alpha(t) x0 + sigma(t) eps,   velocity target v = alpha'(t) x0 + sigma'(t) eps

linear: alpha = 1 - t, sigma = t (v = eps - x0).  cosine (GVP): alpha = cos(pi t / 2),
sigma = sin(pi t / 2). Shapes: `x0, eps: [B, ...]`, `t: [B]` in [0, 1].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PATHS = ("linear", "cosine")
TIME_SAMPLERS = ("uniform", "lognormal")


def _bcast(t, x):
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def coefficients(path: str, t: jax.Array):
    """(alpha, sigma, d_alpha, d_sigma) at t, each shaped like t."""
    if path == "linear":
        return 1.0 - t, t, -jnp.ones_like(t), jnp.ones_like(t)
    if path == "cosine":
        h = jnp.pi / 2
        return jnp.cos(h * t), jnp.sin(h * t), -h * jnp.sin(h * t), h * jnp.cos(h * t)
    raise ValueError(f"diffusion.path: unknown path {path!r}; expected one of {PATHS}")


def interpolate(path: str, x0: jax.Array, eps: jax.Array, t: jax.Array):
    """-> (x_t, v_target), both [B, ...]."""
    a, s, da, ds = (_bcast(c, x0) for c in coefficients(path, t))
    return a * x0 + s * eps, da * x0 + ds * eps


def score_from_velocity(path: str, v: jax.Array, x: jax.Array, t: jax.Array):
    """grad log p_t(x) from the velocity: solve x = a x0 + s eps, v = a' x0 + s' eps for eps.

    Linear path: score = -((1 - t) v + x) / t. Undefined at t = 0 (sigma = 0).
    """
    a, s, da, ds = (_bcast(c, x) for c in coefficients(path, t))
    eps = (a * v - da * x) / (a * ds - da * s)
    return -eps / s


def sample_time(kind: str, rng: jax.Array, batch: int, path: str = "linear") -> jax.Array:
    """t: [B] in (0, 1), 1 = noise. 'uniform': U(0, 1). 'lognormal' (EDM's log-normal noise levels,
    as REPA/REED `loss.py`): s = exp(N(0, 1)) is the noise-to-signal ratio sigma(t) / alpha(t), so
    linear path: t = s / (1 + s) (= sigmoid(n)); cosine path: t = 2/pi atan(s). Either way
    log(sigma/alpha) ~ N(0, 1); `path` matters only for 'lognormal'."""
    if kind == "uniform":
        return jax.random.uniform(rng, (batch,))
    if kind == "lognormal":
        n = jax.random.normal(rng, (batch,))
        if path == "linear":
            return jax.nn.sigmoid(n)
        if path == "cosine":
            return (2.0 / jnp.pi) * jnp.arctan(jnp.exp(n))
        raise ValueError(f"diffusion.path: unknown path {path!r}; expected one of {PATHS}")
    raise ValueError(f"diffusion.time_sampler: unknown {kind!r}; expected one of {TIME_SAMPLERS}")


def x0_from_moments(rng: jax.Array, moments: jax.Array, scale: float) -> jax.Array:
    """VAE posterior sample: moments [B, H, W, 2C] = (mean, std) on channels -> (mean + std N) * scale."""
    mean, std = jnp.split(moments, 2, axis=-1)
    return (mean + std * jax.random.normal(rng, mean.shape, mean.dtype)) * scale
