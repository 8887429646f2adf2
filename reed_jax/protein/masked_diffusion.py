"""Masked (absorbing-state) discrete diffusion over amino-acid tokens.

Time runs from t=0 (every residue masked) to t=1 (clean). Training draws t ~ U[t_min, t_max] per
chain and keeps each real residue with probability t (masks it with probability 1 - t); the
model predicts every residue's amino acid from the backbone and the partly masked sequence. The
loss is ProteinMPNN's label-smoothed cross-entropy over all real residues.

Sampling starts fully masked and walks a linear grid of `num_steps`; at each step the model's
tokens are drawn at `temperature` (the MASK is never a class; X is excluded unless allowed) and a
still-masked residue is revealed with probability dt / (1 - t); the result is the argmax of the
final prediction.
"""
from __future__ import annotations

from typing import Callable

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
           temperature: float = 0.1, allow_x: bool = False) -> jax.Array:
    """logits_fn(tokens [B, L]) -> logits [B, L, 21]; mask [B, L] real residues -> tokens [B, L]
    (padding gets X). Every real residue is unmasked by the end."""
    b, l = mask.shape
    real = mask > 0
    x0 = jnp.full((b, l), residues.MASK, jnp.int32)

    def allowed(logits):
        return logits.at[..., residues.X].set(-jnp.inf) if not allow_x else logits

    def body(i, carry):
        tokens, key = carry
        key, k_draw, k_reveal = jax.random.split(key, 3)
        t, dt = i / num_steps, 1.0 / num_steps
        logits = allowed(logits_fn(tokens).astype(jnp.float32))
        draw = jax.random.categorical(k_draw, logits / temperature).astype(jnp.int32)
        p_reveal = jnp.where(i == num_steps - 1, 1.0, dt / (1.0 - t))
        reveal = (tokens == residues.MASK) & real & (jax.random.uniform(k_reveal, (b, l)) < p_reveal)
        return jnp.where(reveal, draw, tokens), key

    tokens, _ = jax.lax.fori_loop(0, num_steps, body, (x0, rng))
    final = jnp.argmax(allowed(logits_fn(tokens).astype(jnp.float32)), -1).astype(jnp.int32)
    return jnp.where(real, final, residues.X)
