"""Masked (absorbing-state) discrete diffusion over amino-acid tokens (REED `protein/fmif/fm_utils.py`).

Time runs from t=0 (every residue masked) to t=1 (clean): `t` here is the CLEAN fraction. Training
draws t ~ U[t_min, t_max] per chain and keeps each real residue with probability t (masks it with
probability 1 - t); the model predicts every residue's amino acid from the backbone and the partly
masked sequence. The loss is ProteinMPNN's label-smoothed cross-entropy over all real residues,
smoothed over all the head's classes (22 for REED's head: 20 amino acids, X and MASK).
(`objective.combine` takes the noise level 1 - t; `protein.model.losses` converts.)

Sampling (the reference's `Interpolant.sample`): a grid `linspace(t_min, 1, num_steps)` (num_steps
points, num_steps - 1 model calls); at each step t1 -> t2 the model's tokens are drawn at
`temperature` over every class but MASK (X is a class unless `allow_x=False`) and a still-masked
residue is revealed with probability (t2 - t1) / (1 - t1) (1 at the last step); the result is the
argmax (over every class but MASK) of the LAST in-loop prediction, at every real residue, with no
extra forward pass.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from reed_jax.protein import residues


def corrupt(rng: jax.Array, tokens: jax.Array, mask: jax.Array, t_min: float = 0.01, t_max: float = 0.99):
    """tokens [B, L] -> (noisy tokens [B, L], t [B], masked [B, L] bool: real residues hidden)."""
    k_t, k_m = jax.random.split(rng)
    t = jax.random.uniform(k_t, (tokens.shape[0],), minval=t_min, maxval=t_max)
    hidden = (jax.random.uniform(k_m, tokens.shape) >= t[:, None]) & (mask > 0)
    return jnp.where(hidden, residues.MASK, tokens), t, hidden


def smoothed_cross_entropy(logits: jax.Array, tokens: jax.Array, smoothing: float = 0.1) -> jax.Array:
    """ProteinMPNN's loss_smoothed per residue: targets one_hot + smoothing / C, renormalised.
    logits [B, L, C], tokens [B, L] -> [B, L] float32."""
    c = logits.shape[-1]
    target = jax.nn.one_hot(tokens, c) + smoothing / c
    target = target / target.sum(-1, keepdims=True)
    return -(target * jax.nn.log_softmax(logits.astype(jnp.float32), -1)).sum(-1)


def sample(logits_fn: Callable[[jax.Array], jax.Array], rng: jax.Array, mask: jax.Array, num_steps: int,
           temperature: float = 0.1, allow_x: bool = True, t_min: float = 0.01) -> jax.Array:
    """logits_fn(tokens [B, L]) -> logits [B, L, C] (C = 21 or 22; MASK = 21 is never drawn nor returned);
    mask [B, L] real residues -> tokens [B, L] (padding gets X). num_steps >= 2 grid points."""
    if num_steps < 2:
        raise ValueError(f"masked diffusion sampler: num_steps={num_steps} grid points; need >= 2 (protein.sample_steps)")
    b, l = mask.shape
    real = mask > 0
    ts = jnp.linspace(t_min, 1.0, num_steps)
    x0 = jnp.full((b, l), residues.MASK, jnp.int32)

    def allowed(logits):
        if logits.shape[-1] > residues.MASK:
            logits = logits.at[..., residues.MASK].set(-jnp.inf)
        return logits.at[..., residues.X].set(-jnp.inf) if not allow_x else logits

    def body(i, carry):
        tokens, _, key = carry
        key, k_draw, k_reveal = jax.random.split(key, 3)
        t1, t2 = ts[i], ts[i + 1]
        logits = allowed(logits_fn(tokens).astype(jnp.float32))
        pred = jnp.argmax(logits, -1).astype(jnp.int32)
        draw = jax.random.categorical(k_draw, logits / temperature).astype(jnp.int32)
        p_reveal = (t2 - t1) / (1.0 - t1)  # exactly 1 at the last step (t2 = 1)
        reveal = (tokens == residues.MASK) & real & (jax.random.uniform(k_reveal, (b, l)) < p_reveal)
        return jnp.where(reveal, draw, tokens), pred, key

    _, pred, _ = jax.lax.fori_loop(0, num_steps - 1, body, (x0, x0, rng))
    return jnp.where(real, pred, residues.X)
