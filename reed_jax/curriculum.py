"""Curriculum weights as optax-style schedules: `step -> scalar`, jit-friendly.

    L(step) = w_gen(step) * L_gen + w_align(step) * sum_k c_k * L_align_k

`w_gen`: 0 before `start`, a linear ramp 0 -> 1 over `warmup` steps, then constant, or a linear or
cosine decay to 0 at `total_steps`. The cosine decay is the intended `(1 + cos(pi (s - top) /
(total - top))) / 2` with `top = start + warmup` (the reference has an operator-precedence bug).

`w_align`: `coeff` times constant, linear `max(1 - s/S, 0)` or cosine `(1 + cos(pi s/S)) / 2`
decay to 0 at step S (`decay_steps`); with `stop_step` > 0 it is 0 from that step on (HASTE: the
alignment helps early and is switched off once it starts to constrain the generator).

The image headline run is `gen_weight(start=0, warmup=50_000)` and `align_weight(0.5)`:
w_gen = min(s/50000, 1), w_align = 0.5, so step 0 trains the alignment alone.
"""
from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

Schedule = Callable  # step (int or int array) -> float scalar

DECAYS = ("constant", "linear", "cosine")


def _decay(kind: str, steps: int, key: str) -> optax.Schedule:
    """1 -> 0 over `steps` (clamped at 0 after), or constant 1."""
    if kind == "constant":
        return optax.constant_schedule(1.0)
    if steps <= 0:
        raise ValueError(f"{key}: a {kind} decay needs a positive number of steps, got {steps}")
    if kind == "linear":
        return optax.linear_schedule(1.0, 0.0, steps)
    if kind == "cosine":
        return optax.cosine_decay_schedule(1.0, steps)
    raise ValueError(f"{key}: unknown decay {kind!r}; expected one of {DECAYS}")


def gen_weight(start: int = 0, warmup: int = 0, decay: str = "constant", total_steps: int = 0) -> optax.Schedule:
    """w_gen(step): 0 before `start`, linear ramp over `warmup` steps, then `decay` until `total_steps`."""
    if start < 0 or warmup < 0:
        raise ValueError(f"curriculum.gen: start={start} and warmup={warmup} must be >= 0")
    top = start + warmup
    if decay != "constant" and total_steps <= top:
        raise ValueError(f"curriculum.gen: decay {decay!r} needs total_steps > start + warmup = {top}, got {total_steps}")
    tail = _decay(decay, total_steps - top, "curriculum.gen.decay")
    pieces, bounds = [optax.constant_schedule(0.0)], [start]
    if warmup > 0:
        pieces.append(optax.linear_schedule(0.0, 1.0, warmup))
        bounds.append(top)
    pieces.append(tail)
    return optax.join_schedules(pieces, bounds)


def align_weight(coeff: float, decay: str = "constant", decay_steps: int = 0, stop_step: int = 0) -> optax.Schedule:
    """w_align(step) = coeff * (constant | linear | cosine decay to 0 at `decay_steps`), and 0 from
    `stop_step` on when it is > 0 (HASTE's early stop of every alignment term)."""
    if stop_step < 0:
        raise ValueError(f"curriculum.align.stop_step={stop_step} must be >= 0 (0 = never)")
    shape = _decay(decay, decay_steps, "curriculum.align.decay")
    if not stop_step:
        return lambda step: coeff * shape(step)
    return lambda step: jnp.where(jnp.asarray(step) < stop_step, coeff * shape(step), 0.0)


def from_config(cur) -> tuple[optax.Schedule, optax.Schedule]:
    """(w_gen, w_align) from a `config.curriculum` block."""
    g, a = cur.gen, cur.align
    return (gen_weight(g.start, g.warmup, g.decay, g.total_steps),
            align_weight(a.coeff, a.decay, a.decay_steps, a.get("stop_step", 0)))
