"""Samplers for flow/diffusion models trained with `interpolants` (t = 1 noise -> t = 0 data).

A `velocity_fn(x, t, y) -> v` gives the model's velocity; `t` is a [B] vector. `guided` wraps a
class-conditional model with classifier-free guidance on all channels, `d_u + w (d_c - d_u)`,
applied only for t in the guidance interval [lo, hi] (and only when w > 1, as the reference).

- `ode`: Euler or Heun on `linspace(1, 0, N + 1)`.
- `sde`: Euler-Maruyama on `linspace(1, 0.04, N)` then 0; diffusion w(t) = 2t; drift
  `v - 0.5 w(t) score`; `x += drift dt + sqrt(w |dt|) N(0, 1)`; the last step to 0 is the
  deterministic drift step. CFG acts on the drift (velocity and score together), as the reference.

Everything is jit-able; the loops are `lax.fori_loop` over a precomputed time grid.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from reed_jax.diffusion import interpolants

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
SAMPLERS = ("euler", "heun", "sde")


def guided(model_fn: VelocityFn, scale: float, null_class: int, interval=(0.0, 1.0)) -> VelocityFn:
    """CFG velocity: model_fn(x, t, y) evaluated on [cond; null] in one batch when guidance is on.

    Guidance is on where `scale > 1` and `lo <= t <= hi`; elsewhere the conditional velocity is
    returned, and when no sample of the batch is inside the interval (the samplers share one t
    per step) the doubled batch is skipped (`lax.cond`): with REPA's interval [0, 0.7] a 250-step
    sampler costs 1.7 rather than 2 forward passes per step.
    """
    lo, hi = interval
    if scale <= 1.0:
        return model_fn

    def fn(x, t, y):
        b = x.shape[0]
        on = (t >= lo) & (t <= hi)

        def with_guidance():
            both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                            jnp.concatenate([y, jnp.full_like(y, null_class)]))
            cond, uncond = both[:b], both[b:]
            return jnp.where(on.reshape((b,) + (1,) * (x.ndim - 1)), uncond + scale * (cond - uncond), cond)

        return jax.lax.cond(jnp.any(on), with_guidance, lambda: model_fn(x, t, y))

    return fn


def ode(velocity_fn: VelocityFn, x1: jax.Array, y: jax.Array, num_steps: int, method: str = "euler") -> jax.Array:
    """Integrate dx/dt = v from t = 1 (x1 ~ N(0, I)) to t = 0 on `linspace(1, 0, N + 1)`."""
    if method not in ("euler", "heun"):
        raise ValueError(f"sampler: unknown ODE method {method!r}; expected 'euler' or 'heun'")
    grid = jnp.linspace(1.0, 0.0, num_steps + 1)
    b = x1.shape[0]

    def step(i, x):
        t_cur, t_next = grid[i], grid[i + 1]
        dt = t_next - t_cur
        d_cur = velocity_fn(x, jnp.full((b,), t_cur), y)
        x_next = x + dt * d_cur
        if method == "heun":
            d_next = velocity_fn(x_next, jnp.full((b,), t_next), y)
            # The reference skips the corrector on the last step (t_next = 0).
            x_next = jnp.where(i < num_steps - 1, x + dt * 0.5 * (d_cur + d_next), x_next)
        return x_next

    return jax.lax.fori_loop(0, num_steps, step, x1)


def sde(velocity_fn: VelocityFn, x1: jax.Array, y: jax.Array, num_steps: int, rng: jax.Array,
        path: str = "linear", t_last: float = 0.04) -> jax.Array:
    """Euler-Maruyama from t = 1 to 0: `num_steps - 1` stochastic steps on linspace(1, t_last, N),
    then one deterministic drift step to 0. Diffusion w(t) = 2t."""
    if num_steps < 2:
        raise ValueError(f"sampler.num_steps={num_steps}: the SDE sampler needs at least 2 steps")
    grid = jnp.concatenate([jnp.linspace(1.0, t_last, num_steps), jnp.zeros((1,))])
    b = x1.shape[0]

    def drift(x, t):
        tb = jnp.full((b,), t)
        v = velocity_fn(x, tb, y)
        return v - 0.5 * (2.0 * t) * interpolants.score_from_velocity(path, v, x, tb)

    def step(i, carry):
        x, key = carry
        key, sub = jax.random.split(key)
        t_cur, t_next = grid[i], grid[i + 1]
        dt = t_next - t_cur
        noise = jax.random.normal(sub, x.shape, x.dtype)
        x = x + drift(x, t_cur) * dt + jnp.sqrt(2.0 * t_cur) * jnp.sqrt(jnp.abs(dt)) * noise
        return x, key

    x, _ = jax.lax.fori_loop(0, num_steps - 1, step, (x1, rng))
    t_cur = grid[num_steps - 1]
    return x + (0.0 - t_cur) * drift(x, t_cur)


def sample(velocity_fn: VelocityFn, x1: jax.Array, y: jax.Array, *, method: str, num_steps: int,
           rng: jax.Array, path: str = "linear") -> jax.Array:
    """Dispatch on `method` in SAMPLERS."""
    if method == "sde":
        return sde(velocity_fn, x1, y, num_steps, rng, path)
    if method in ("euler", "heun"):
        return ode(velocity_fn, x1, y, num_steps, method)
    raise ValueError(f"sampler.method: unknown {method!r}; expected one of {SAMPLERS}")
