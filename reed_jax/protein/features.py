"""Backbone featurisation of ProteinMPNN (Dauparas et al. 2022), batched, in JAX.

Inputs are padded: coords [B, L, 4, 3] (N, CA, C, O; Angstrom), mask [B, L] (1 = residue with a
complete backbone), residue_idx [B, L] (position along the chain). Outputs:
- `knn`: the k nearest residues of each residue by C-alpha distance (itself included, at 0 A),
  padding pushed to the end: E_idx [B, L, k] int32;
- `rbf_features`: 25 atom-pair distances (N, CA, C, O and the virtual C-beta) between residue i and
  each neighbour j, each expanded on 16 Gaussians centred on linspace(2, 22) A with width 1.25 A:
  [B, L, k, 400], in ProteinMPNN's pair order (`PAIRS`);
- `relative_offsets`: clip(idx_i - idx_j, -32, 32) + 32 at each edge (65 = other chain) [B, L, k].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# (atom of residue i, atom of neighbour j); atoms 0 N, 1 CA, 2 C, 3 O, 4 CB (ProteinMPNN's order)
PAIRS = ((1, 1), (0, 0), (2, 2), (3, 3), (4, 4), (1, 0), (1, 2), (1, 3), (1, 4), (0, 2), (0, 3), (0, 4),
         (4, 2), (4, 3), (3, 2), (0, 1), (2, 1), (3, 1), (4, 1), (2, 0), (3, 0), (4, 0), (2, 4), (3, 4), (2, 3))
NUM_RBF, RBF_MIN, RBF_MAX = 16, 2.0, 22.0
MAX_OFFSET = 32


def virtual_cb(coords: jax.Array) -> jax.Array:
    """Ideal C-beta from N, CA, C: [..., 4, 3] -> [..., 3] (ProteinMPNN's constants)."""
    n, ca, c = coords[..., 0, :], coords[..., 1, :], coords[..., 2, :]
    b, cc = ca - n, c - ca
    a = jnp.cross(b, cc)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca


def knn(ca: jax.Array, mask: jax.Array, k: int) -> jax.Array:
    """[B, L, 3], [B, L] -> E_idx [B, L, min(k, L)]: nearest first; pairs with padding sort last."""
    m2 = mask[:, :, None] * mask[:, None, :]
    d = jnp.sqrt(jnp.sum((ca[:, :, None] - ca[:, None, :]) ** 2, -1) + 1e-6)
    d = m2 * d
    d_adj = d + (1.0 - m2) * jnp.max(d, axis=-1, keepdims=True)
    k = min(k, ca.shape[1])
    return jax.lax.top_k(-d_adj, k)[1].astype(jnp.int32)


def gather_edges(x: jax.Array, e_idx: jax.Array) -> jax.Array:
    """Node features x [B, L, ...] at neighbours e_idx [B, L, k] -> [B, L, k, ...]."""
    return jax.vmap(lambda xb, ib: xb[ib])(x, e_idx)


def rbf(d: jax.Array) -> jax.Array:
    mu = jnp.linspace(RBF_MIN, RBF_MAX, NUM_RBF)
    sigma = (RBF_MAX - RBF_MIN) / NUM_RBF
    return jnp.exp(-(((d[..., None] - mu) / sigma) ** 2))


def atoms5(coords: jax.Array) -> jax.Array:
    """[B, L, 4, 3] -> [B, L, 5, 3] with the virtual C-beta appended."""
    return jnp.concatenate([coords, virtual_cb(coords)[..., None, :]], axis=-2)


def rbf_features(coords: jax.Array, e_idx: jax.Array) -> jax.Array:
    """[B, L, 4, 3], [B, L, k] -> [B, L, k, 25 * 16]."""
    y = atoms5(coords)
    yj = gather_edges(y, e_idx)  # [B, L, k, 5, 3]
    a, b = (jnp.asarray([p[i] for p in PAIRS]) for i in (0, 1))
    d = jnp.sqrt(jnp.sum((y[:, :, None, a] - yj[..., b, :]) ** 2, -1) + 1e-6)  # [B, L, k, 25]
    return rbf(d).reshape(d.shape[:-1] + (len(PAIRS) * NUM_RBF,))  # pair-major, as ProteinMPNN concatenates


def relative_offsets(residue_idx: jax.Array, e_idx: jax.Array, chain_idx: jax.Array | None = None) -> jax.Array:
    """[B, L] positions -> [B, L, k] int32 classes 0..64 (offset + 32, clipped) or 65 (other chain)."""
    off = residue_idx[:, :, None] - gather_edges(residue_idx, e_idx)
    d = jnp.clip(off + MAX_OFFSET, 0, 2 * MAX_OFFSET)
    if chain_idx is None:
        return d.astype(jnp.int32)
    same = chain_idx[:, :, None] == gather_edges(chain_idx, e_idx)
    return jnp.where(same, d, 2 * MAX_OFFSET + 1).astype(jnp.int32)
