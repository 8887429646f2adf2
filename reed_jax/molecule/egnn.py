"""E(3)-equivariant graph network over padded molecules (EGNN, Satorras et al. 2021, with edge features).

Inputs for B molecules of up to N atoms: coords [B, N, 3], node features [B, N, F] (one-hot atom
type and charge, and the flow time), edge features [B, N, N, E] (one-hot bond class), mask [B, N].
Each layer, for every pair of real atoms i != j:

    m_ij = phi_m(h_i, h_j, |x_i - x_j|^2, e_ij)
    x_i <- x_i + sum_j (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij) / (n - 1)
    h_i <- h_i + phi_h(h_i, sum_j m_ij / (n - 1)),     e_ij <- e_ij + phi_e(m_ij)

so h and e are invariant and x equivariant under rotation, translation and permutation of the
atoms. Outputs: coordinates [B, N, 3] (centre of mass of real atoms removed), per-atom features
[B, N, D], edge features [B, N, N, De] and the per-layer node features (the alignment taps:
`layer{k}` after the k-th layer, 1-based).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def centre(x, mask):
    """Remove the centre of mass of the real atoms: x [B, N, 3], mask [B, N]."""
    m = mask[..., None]
    com = (x * m).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    return (x - com) * m


class EGNNLayer(nn.Module):
    hidden: int
    edge_dim: int

    @nn.compact
    def __call__(self, x, h, e, pair_mask, n_norm):
        diff = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3]
        d2 = (diff ** 2).sum(-1, keepdims=True)
        # phi_m's first Linear on [h_i, h_j, d2, e_ij], split by input so the node terms cost O(N), not O(N^2)
        m = (nn.Dense(self.hidden, name="msg_i")(h)[:, :, None] + nn.Dense(self.hidden, use_bias=False, name="msg_j")(
            h)[:, None] + nn.Dense(self.hidden, use_bias=False, name="msg_d")(d2) + nn.Dense(
            self.hidden, use_bias=False, name="msg_e")(e))
        m = nn.silu(m)
        m = nn.silu(nn.Dense(self.hidden, name="msg_1")(m)) * pair_mask[..., None]
        w = nn.Dense(1, kernel_init=nn.initializers.variance_scaling(1e-3, "fan_avg", "uniform"), name="coord")(
            nn.silu(nn.Dense(self.hidden, name="coord_0")(m)))
        x = x + (diff / (jnp.sqrt(d2 + 1e-8) + 1.0) * w * pair_mask[..., None]).sum(2) / n_norm
        agg = m.sum(2) / n_norm
        h = h + nn.Dense(h.shape[-1], name="node_1")(nn.silu(nn.Dense(self.hidden, name="node_0")(
            jnp.concatenate([h, agg], -1))))
        e = e + nn.Dense(self.edge_dim, name="edge")(m)
        return x, nn.LayerNorm(name="norm")(h), e


class EGNN(nn.Module):
    hidden: int = 128
    edge_dim: int = 32
    layers: int = 6

    @nn.compact
    def __call__(self, coords, nodes, edges, mask):
        mask = mask.astype(jnp.float32)
        pair = mask[:, :, None] * mask[:, None, :] * (1.0 - jnp.eye(mask.shape[1]))[None]
        n_norm = jnp.maximum(mask.sum(1), 2.0)[:, None, None] - 1.0
        h = nn.Dense(self.hidden, name="embed_nodes")(nodes)
        e = nn.Dense(self.edge_dim, name="embed_edges")(edges)
        x = centre(coords, mask)
        taps = {}
        for i in range(self.layers):
            x, h, e = EGNNLayer(self.hidden, self.edge_dim, name=f"layer_{i}")(x, h, e, pair, n_norm)
            h = h * mask[..., None]
            x = centre(x, mask)
            taps[f"layer{i + 1}"] = h
        e = 0.5 * (e + e.transpose(0, 2, 1, 3))  # bonds are symmetric
        return x, h, e, taps
