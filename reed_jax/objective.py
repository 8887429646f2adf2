"""The REED objective, shared by every track.

    L(step) = w_gen(step) * L_gen + w_align(step) * sum_k c_k * mean_b( a_k(t_b) * L_align_k[b] )

`L_align_k[b] = -cos(proj_k(h), z_k)` averaged over the tokens of sample b (or one pooled vector),
computed in float32. `a_k(t)` is a per-sample noise-level weight, applied per sample (the reference
multiplies a [B,1,1,1] weight by a [B] loss, i.e. mean(a) * mean(loss); we do not). A coefficient
c_k = 0 switches target k off (the reference turns 0 into 1).

Tracks provide their per-sample generative loss; this module only combines.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

NOISE_WEIGHTS = ("constant", "linear", "cosine", "sigmoid", "loglinear", "cutoff")


def noise_weight(kind: str, t: jax.Array, lo: float = 0.0, hi: float = 1.0) -> jax.Array:
    """a(t) for t: [B] in [0, 1] (1 = noise) -> [B] float32."""
    t = t.astype(jnp.float32)
    if kind == "constant":
        return jnp.ones_like(t)
    if kind == "linear":
        return 1.0 - t
    if kind == "cosine":
        return (1.0 + jnp.cos(jnp.pi * t)) / 2.0
    if kind == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(10.0 * (t - 0.5)))
    if kind == "loglinear":
        return 1.0 - jnp.log1p(t)
    if kind == "cutoff":
        return ((t >= lo) & (t <= hi)).astype(jnp.float32)
    raise ValueError(f"noise weight: unknown {kind!r}; expected one of {NOISE_WEIGHTS}")


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """F.normalize: x / max(||x||, eps) along the last axis, as sqrt(max(||x||^2, eps^2)) so an all-zero
    row (a padded residue) has a zero gradient instead of NaN."""
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def spatial_normalize(target: jax.Array, eps: float = 1e-6) -> jax.Array:
    """iREPA's spatial normalisation of target tokens [B, T, D]: subtract each image's mean token, then
    divide every channel by its standard deviation over the image's tokens (float32). What is common
    to every token of an image (its global content) is removed; what varies across space remains."""
    x = target.astype(jnp.float32)
    x = x - x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + eps)


def alignment_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Negative cosine similarity per sample, float32.

    pred, target: [B, T, D] (token-level) or [B, D] (pooled); mask: optional [B, T] of valid tokens.
    Returns [B]: mean over (valid) tokens of -cos(pred, target).
    """
    if pred.shape != target.shape:
        raise ValueError(f"alignment: projected features {pred.shape} and target {target.shape} differ in shape")
    cos = jnp.sum(_normalize(pred.astype(jnp.float32)) * _normalize(target.astype(jnp.float32)), axis=-1)
    if cos.ndim == 1:
        return -cos
    if mask is None:
        return -cos.mean(axis=tuple(range(1, cos.ndim)))
    mask = mask.astype(jnp.float32)
    axes = tuple(range(1, cos.ndim))
    return -(cos * mask).sum(axes) / jnp.maximum(mask.sum(axes), 1.0)


def attention_loss(logits: jax.Array, teacher: jax.Array) -> jax.Array:
    """HASTE's attention alignment per sample, float32: the cross-entropy of the student's attention
    rows against the teacher's, -sum_k p_T[k] log softmax(logits)[k], averaged over heads and query rows.

    logits: [B, H, T, T] the student's pre-softmax attention (q k^T / sqrt(d)); teacher: [B, H, T, T]
    or [B, 1, T, T] (one map for every head) row-stochastic maps. Returns [B]. Its gradient is that
    of KL(p_T || p_S); the value includes the teacher's entropy (a constant), as the reference's."""
    if logits.ndim != 4 or teacher.ndim != 4 or teacher.shape[0] != logits.shape[0] \
            or teacher.shape[2:] != logits.shape[2:] or teacher.shape[1] not in (1, logits.shape[1]):
        raise ValueError(f"attention alignment: student logits {logits.shape} and teacher maps {teacher.shape} "
                         f"must be [B, H, T, T] and [B, H or 1, T, T]")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -(teacher.astype(jnp.float32) * logp).sum(-1).mean(axis=(1, 2))


def affinity(tokens: jax.Array, temperature: float = 0.1) -> jax.Array:
    """A teacher attention map from tokens [B, T, D] that have no attention of their own (a CNN's):
    softmax over keys of the cosine similarity / temperature -> [B, 1, T, T] row-stochastic, float32."""
    z = _normalize(tokens.astype(jnp.float32))
    return jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", z, z) / temperature, axis=-1)[:, None]


def mse_per_sample(pred: jax.Array, target: jax.Array) -> jax.Array:
    """[B, ...] -> [B]: mean squared error over every non-batch axis, float32."""
    d = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
    return d.mean(axis=tuple(range(1, d.ndim)))


def combine(gen: jax.Array, align: Mapping[str, jax.Array], t: jax.Array, w_gen, w_align,
            targets: Mapping[str, Mapping]) -> tuple[jax.Array, dict]:
    """Total loss and its parts.

    gen: [B] per-sample generative loss, or {part: [B]} whose sum is (part 'gen' the data's own
    term, logged as loss/gen; the others, e.g. REG's weighted class-token term 'cls', as
    loss/<part>, so that loss/gen compares across variants); align: {name: [B] per-sample alignment loss};
    t: [B] noise levels in [0, 1], 1 = pure noise (a track whose own time runs the other way, proteins
    and molecules with t = 1 clean, passes 1 - t; see reed_jax/tracks.py); w_gen, w_align: scalars
    for this step; targets: {name: {coeff, noise_weight, cutoff_lo, cutoff_hi}}.
    Returns (loss scalar, metrics dict of scalars).
    """
    parts = dict(gen) if isinstance(gen, Mapping) else {"gen": gen}
    if "gen" not in parts:
        raise ValueError(f"objective.combine: the generative parts {sorted(parts)} have no 'gen' (the data's term)")
    metrics = {f"loss/{k}": v.mean() for k, v in parts.items()}
    metrics.update({"weight/gen": jnp.asarray(w_gen, jnp.float32), "weight/align": jnp.asarray(w_align, jnp.float32)})
    gen = sum(parts.values())
    align_total = jnp.zeros((), jnp.float32)
    for name, per_sample in align.items():
        cfg = targets[name]
        metrics[f"loss/align_{name}"] = per_sample.mean()
        if cfg["coeff"] == 0:  # switched off: contributes nothing, not even a NaN
            continue
        a = noise_weight(cfg["noise_weight"], t, cfg.get("cutoff_lo", 0.0), cfg.get("cutoff_hi", 1.0))
        term = jnp.mean(a * per_sample)
        align_total = align_total + cfg["coeff"] * term
    metrics["loss/align"] = align_total
    loss = w_gen * gen.mean() + w_align * align_total
    metrics["loss/total"] = loss
    return loss, metrics
