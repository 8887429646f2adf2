"""Semla: the scalable E(3)-equivariant attention backbone of SemlaFlow (Irwin et al., 2024), in Flax.

Same interface as `egnn.EGNN`: coords [B, N, 3], node features [B, N, F], edge features
[B, N, N, E], mask [B, N] (optionally cond_coords [B, N, 3], self-conditioning) -> (coords
[B, N, 3], atom features [B, N, D], edge features [B, N, N, De], {`layer{k}`: atom features
[B, N, D] after layer k, 1-based: SemlaFlow's `--align_depth d` (0-based) is `layer{d+1}`}).

Each atom carries invariant features h [B, N, D] and S learnable *coordinate sets*
x [B, N, 3, S] (the input coordinates mixed by a bias-free linear map over sets, so every set
rotates with the molecule). Layer k (of `layers`):

  1. feed-forward:  h += MLP([LN(h), |xn^s|_s]),   x += W_o (g(LN(h)) * W_i xn)
                    xn = CoordNorm(x): centred on the real atoms, each set divided by its mean length
                    over real atoms, times a learnt weight per set
  2. messages:      m_ij = MLP(P LN(h_i), P LN(h_j), <xc_i^s, xc_j^s>_s [, LN(e_ij)])
                    -> `heads` node-attention logits, S coordinate-attention logits [, De edge features]
  3. node attention:  h_i += W_o concat_k( v_i^k sum_j a_ij^k V^k LN(h_j) ),   a = softmax_j over real atoms
  4. coord attention: x_i += W_o sum_j a_ij^p (y_i^p - y_j^p) / (|y_i^p - y_j^p| + eps) * v_i^p,  y = W xn

with v_i = sqrt(sum_j a_ij^2) the variance-preserving scale of GNN-VPA. Edge features enter the
first layer and leave the last (the layers in between pass none, as in the reference). After the
layers: one more feed-forward, the output coordinates = a bias-free map of CoordNorm(x) to one set,
and a bond-refinement message MLP on the output coordinates that gives the final edge features.

Invariance: h and e depend on x only through dot products of centred sets, lengths and
distances; every coordinate update is a linear map over sets of (differences of) coordinates, so
x rotates with the input and, once centred, ignores translations. Padding atoms are masked out of
every softmax, mean and sum. Size: an embedding of the atom count joins the node features.

Where the reference differs: its EquivariantMLP gates the *sum* of the projected sets
(inv[p] * sum_q proj[q], an outer product summed over the wrong axis); we gate each projected set
by its own invariant (inv[p] * proj[p]), the evident intent. The first Dense of each pair MLP is
split by input (node_i, node_j, pair terms), which equals the reference's concatenation and keeps
the node terms O(N).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from reed_jax.molecule.egnn import centre

NEG = -1e9  # attention logit of a masked pair


def coord_norm(x, mask, weights, length: bool, eps: float = 1e-6):
    """x [B, N, 3, S] -> centred on the real atoms (mask [B, N]), times weights [S]; with `length`
    each set is first divided by its mean vector length over the real atoms."""
    m = mask[:, :, None, None]
    n = jnp.maximum(mask.sum(1), 1.0)[:, None, None, None]
    x = x * m
    x = (x - x.sum(1, keepdims=True) / n) * m
    if length:
        mean_len = (jnp.sqrt((x ** 2).sum(2, keepdims=True) + 1e-12) * m).sum(1, keepdims=True) / n
        x = x / (mean_len + eps)
    return x * weights


class CoordNorm(nn.Module):
    length: bool = True

    @nn.compact
    def __call__(self, x, mask):
        return coord_norm(x, mask, self.param("set_weights", nn.initializers.ones, (x.shape[-1],)), self.length)


def set_dense(features: int, name: str):
    """A bias-free linear map over coordinate sets (the last axis): equivariant."""
    return nn.Dense(features, use_bias=False, name=name)


def attention(logits, adj):
    """Softmax over j of logits [B, N, N, K] restricted to adj [B, N, N] -> (weights, VPA scale [B, N, K])."""
    a = jax.nn.softmax(jnp.where(adj[..., None] > 0, logits.astype(jnp.float32), NEG), axis=2)
    a = a * adj[..., None]  # rows of padding atoms (no real neighbour) attend nowhere
    return a, jnp.sqrt((a ** 2).sum(2))


class FeedForward(nn.Module):
    """Step 1: invariant update from [LN(h), set lengths]; equivariant update gated by LN(h)."""
    sets: int
    proj_sets: int

    @nn.compact
    def __call__(self, x, h, mask):
        d = h.shape[-1]
        hn = nn.LayerNorm(name="node_norm")(h)
        xn = CoordNorm(name="coord_norm")(x, mask)
        lengths = jnp.sqrt((xn ** 2).sum(2) + 1e-12)  # [B, N, S]
        dh = nn.Dense(d, name="inv_1")(nn.silu(nn.Dense(4 * d, name="inv_0")(jnp.concatenate([hn, lengths], -1))))
        gate = nn.Dense(self.proj_sets, name="gate_1")(nn.silu(nn.Dense(self.proj_sets, name="gate_0")(hn)))
        dx = set_dense(self.sets, "equi_out")(gate[:, :, None, :] * set_dense(self.proj_sets, "equi_in")(xn))
        return x + dx * mask[:, :, None, None], h + dh * mask[..., None]


class SemlaLayer(nn.Module):
    sets: int
    heads: int
    message_dim: int
    message_hidden: int
    edge_out: int = 0  # > 0: this layer also returns edge features of this width

    @nn.compact
    def __call__(self, x, h, e, mask, adj):
        d = h.shape[-1]
        x, h = FeedForward(self.sets, self.message_dim, name="ff")(x, h, mask)
        # messages
        hm = nn.Dense(self.message_dim, name="msg_node")(nn.LayerNorm(name="msg_norm")(h))
        xc = CoordNorm(length=False, name="msg_coord_norm")(x, mask)
        dots = jnp.einsum("bids,bjds->bijs", xc, xc)
        pre = (nn.Dense(self.message_hidden, name="msg_i")(hm)[:, :, None]
               + nn.Dense(self.message_hidden, use_bias=False, name="msg_j")(hm)[:, None]
               + nn.Dense(self.message_hidden, use_bias=False, name="msg_dots")(dots))
        if e is not None:
            pre = pre + nn.Dense(self.message_hidden, use_bias=False, name="msg_edges")(
                nn.LayerNorm(name="edge_norm")(e))
        msg = nn.Dense(self.heads + self.sets + self.edge_out, name="msg_out")(nn.silu(pre))
        # node attention
        a, vpa = attention(msg[..., :self.heads], adj)
        v = nn.Dense(d, name="attn_in")(nn.LayerNorm(name="attn_norm")(h)).reshape(h.shape[:2] + (self.heads, -1))
        upd = jnp.einsum("bijk,bjkc->bikc", a, v) * vpa[..., None]
        h = h + nn.Dense(d, name="attn_out")(upd.reshape(h.shape)) * mask[..., None]
        # coordinate attention
        a, vpa = attention(msg[..., self.heads:self.heads + self.sets], adj)
        y = set_dense(self.sets, "coord_in")(CoordNorm(name="coord_attn_norm")(x, mask))  # [B, N, 3, P]
        diff = y[:, :, None] - y[:, None]  # [B, N, N, 3, P]
        unit = diff / (jnp.sqrt((diff ** 2).sum(3, keepdims=True) + 1e-12) + 1e-6)
        upd = (unit * a[:, :, :, None, :]).sum(2) * vpa[:, :, None, :]
        x = x + set_dense(self.sets, "coord_out")(upd) * mask[:, :, None, None]
        return x, h, (msg[..., self.heads + self.sets:] if self.edge_out else None)


class BondRefine(nn.Module):
    """Edge features from the output coordinates (distances, dot products), LN(h) pairs and LN(e)."""
    message_dim: int

    @nn.compact
    def __call__(self, x, h, e, mask):
        xc = CoordNorm(length=False, name="coord_norm")(x[..., None], mask)[..., 0]
        d2 = ((xc[:, :, None] - xc[:, None]) ** 2).sum(-1, keepdims=True)
        dot = jnp.einsum("bid,bjd->bij", xc, xc)[..., None]
        hm = nn.Dense(self.message_dim, name="node")(nn.LayerNorm(name="node_norm")(h))
        pre = (nn.Dense(self.message_dim, name="pre_i")(hm)[:, :, None]
               + nn.Dense(self.message_dim, use_bias=False, name="pre_j")(hm)[:, None]
               + nn.Dense(self.message_dim, use_bias=False, name="pre_geom")(jnp.concatenate([d2, dot], -1))
               + nn.Dense(self.message_dim, use_bias=False, name="pre_edges")(nn.LayerNorm(name="edge_norm")(e)))
        return nn.Dense(e.shape[-1], name="out")(nn.silu(pre))


class Semla(nn.Module):
    hidden: int = 384      # d_model
    edge_dim: int = 128    # d_edge
    layers: int = 12
    sets: int = 64         # coordinate sets
    heads: int = 32
    message_dim: int = 128
    message_hidden: int = 128
    size_emb: int = 64
    max_atoms: int = 256

    @nn.compact
    def __call__(self, coords, nodes, edges, mask, cond_coords=None):
        """cond_coords [B, N, 3] (self-conditioning: the previous prediction, zeros for none) joins the
        input as a second coordinate set before the projection to `sets` sets, as the reference's."""
        mask = mask.astype(jnp.float32)
        adj = mask[:, :, None] * mask[:, None, :]
        n_atoms = jnp.clip(mask.sum(1).astype(jnp.int32), 0, self.max_atoms)
        nodes = jnp.concatenate([nodes, nn.Embed(self.max_atoms + 1, self.size_emb, name="size_embed")(n_atoms)[
            :, None].repeat(nodes.shape[1], 1)], -1)
        h = nn.Dense(self.hidden, name="embed_nodes_1")(nn.silu(nn.Dense(self.hidden, name="embed_nodes_0")(nodes)))
        h = h * mask[..., None]
        e = nn.Dense(self.edge_dim, name="embed_edges_1")(nn.silu(nn.Dense(self.edge_dim, name="embed_edges_0")(
            edges)))
        x = centre(coords, mask)[..., None]
        if cond_coords is not None:
            x = jnp.concatenate([x, centre(cond_coords, mask)[..., None]], -1)
        x = set_dense(self.sets, "coord_sets")(x) * mask[:, :, None, None]
        taps = {}
        for i in range(self.layers):
            edge_out = self.edge_dim if i == self.layers - 1 else 0
            x, h, e = SemlaLayer(self.sets, self.heads, self.message_dim, self.message_hidden, edge_out,
                                 name=f"layer_{i}")(x, h, e if i == 0 else None, mask, adj)
            taps[f"layer{i + 1}"] = h
        x, h = FeedForward(self.sets, self.message_dim, name="final_ff")(x, h, mask)
        out = set_dense(1, "coord_head")(CoordNorm(name="coord_out_norm")(x, mask))[..., 0]
        out = centre(out, mask)
        e = BondRefine(self.message_dim, name="bond_refine")(out, h, e, mask)
        h = nn.LayerNorm(name="feat_norm")(h) * mask[..., None]
        e = nn.LayerNorm(name="bond_norm")(e)
        e = 0.5 * (e + e.transpose(0, 2, 1, 3))  # bonds are symmetric
        return out, h, e, taps
