"""ProteinMPNN-style message passing for masked discrete diffusion (non-autoregressive decoder).

`MPNN(...)(coords, mask, residue_idx, tokens, train)`:
  coords [B, L, 4, 3] backbone N, CA, C, O (Angstrom), mask [B, L] (1 = real residue),
  residue_idx [B, L] (position along the chain), tokens [B, L] int (0..20 amino acids / X,
  21 = MASK). Returns (logits [B, L, num_letters], taps): num_letters = 21 (20 amino acids + X,
  ProteinMPNN / the teacher) or 22 (REED's student: MASK is a class too). taps holds
  `encoder_nodes` [B, L, H], `encoder_edges` [B, L, k, H], `decoder_edges` [B, L, k, 2H] (h_ES:
  h_E with the neighbour's token embedding, the decoder's input), `decoder{i}_nodes` [B, L, H]
  (after decoder layer i, 1-based), with `decoder_edge_mlp` also `decoder{i}_edges` [B, L, k, 2H]
  (h_ES_new of decoder layer i), and `e_idx` [B, L, k] (the kNN graph).

REED's student (REED `protein/fmif/model_utils.py`, run with `--update_edge --learnable_node`):
- `decoder_edge_mlp`: every decoder layer also computes h_ES_new = norm_edge(h_ES + dropout(
  W_edge([message, h_ES]))) with W_edge = LayerNorm(3H) -> Linear(3H, 3H) -> GELU -> Linear(3H, 2H);
  `update_edge`: the next decoder layer reads h_ES_new instead of h_ES (else h_ES is static and
  h_ES_new is only a tap). The reference's pair target aligns to decoder layer 2's h_ES_new.
- `learnable_node`: the initial node features are a learned [H] vector (zeros at init), not zeros.
- Every matrix (Linear kernels, the token embedding) is xavier-uniform; biases keep PyTorch's
  default U(+-1/sqrt(fan_in)) (the reference applies xavier to every parameter with dim > 1).

The layers are ProteinMPNN's (and colabdesign's): features -> W_e -> encoder layers (node and
edge updates, messages summed over neighbours / 30) -> decoder layers that see, for every
neighbour j (itself included: the nearest neighbour is the residue itself), [h_E_ij, h_S_j, h_V_j]
with h_S the embedding of the current (noisy) token: ProteinMPNN's decoder with an all-visible
order. Parameter names follow colabdesign's haiku modules so `protein.convert_mpnn` maps its
released weights 1:1. Padded neighbours (chains shorter than k in a padded batch) are masked in
the decoder too, so outputs do not depend on the padding (the reference masks them in the
encoder only; docs/deviations.md).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from reed_jax.protein import features as F, residues

gelu = functools.partial(nn.gelu, approximate=False)
LN_EPS = 1e-5


xavier = nn.initializers.xavier_uniform()


def _ln(name):
    return nn.LayerNorm(epsilon=LN_EPS, name=name)


class Linear(nn.Module):
    """nn.Dense with the reference's init: xavier-uniform kernel [in, out], bias U(+-1/sqrt(in)) (PyTorch's
    nn.Linear default; the reference re-initialises only the matrices). Same param names as nn.Dense."""
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", xavier, (fan_in, self.features), jnp.float32)
        y = jnp.dot(x, kernel)
        if self.use_bias:
            bound = 1.0 / math.sqrt(fan_in)
            bias = self.param("bias", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound),
                              (self.features,))
            y = y + bias
        return y


def Dense(features: int, name: str, use_bias: bool = True) -> Linear:  # noqa: N802 (a layer constructor)
    return Linear(features, use_bias, name=name)


class FeedForward(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, h):
        return Dense(self.hidden, name="W_out")(gelu(Dense(4 * self.hidden, name="W_in")(h)))


class EncLayer(nn.Module):
    hidden: int
    dropout: float
    scale: float = 30.0

    def _messages(self, h_v, h_e, e_idx, names):
        h_ev = jnp.concatenate([jnp.broadcast_to(h_v[:, :, None], h_e.shape[:-1] + (h_v.shape[-1],)), h_e,
                                F.gather_edges(h_v, e_idx)], -1)
        a, b, c = (Dense(self.hidden, name=n) for n in names)
        return c(gelu(b(gelu(a(h_ev)))))

    @nn.compact
    def __call__(self, h_v, h_e, e_idx, mask, mask_attend, train: bool):
        drop = lambda x: nn.Dropout(self.dropout, deterministic=not train)(x)
        msg = self._messages(h_v, h_e, e_idx, ("W1", "W2", "W3")) * mask_attend[..., None]
        h_v = _ln("norm1")(h_v + drop(msg.sum(-2) / self.scale))
        h_v = _ln("norm2")(h_v + drop(FeedForward(self.hidden, name="dense")(h_v)))
        h_v = h_v * mask[..., None]
        msg = self._messages(h_v, h_e, e_idx, ("W11", "W12", "W13"))
        h_e = _ln("norm3")(h_e + drop(msg))
        return h_v, h_e


class DecLayer(nn.Module):
    """h_v [B, L, H], h_es [B, L, k, 2H] (edges + neighbour tokens), h_esv [B, L, k, 3H] (h_es + neighbour
    nodes) -> (h_v [B, L, H], h_es_new [B, L, k, 2H] or None without `edge_mlp`)."""
    hidden: int
    dropout: float
    scale: float = 30.0
    edge_mlp: bool = False

    @nn.compact
    def __call__(self, h_v, h_es, h_esv, mask, mask_attend, train: bool):
        drop = lambda x: nn.Dropout(self.dropout, deterministic=not train)(x)
        h = jnp.concatenate([jnp.broadcast_to(h_v[:, :, None], h_esv.shape[:-1] + (h_v.shape[-1],)), h_esv], -1)
        msg = Dense(self.hidden, name="W3")(gelu(Dense(self.hidden, name="W2")(gelu(
            Dense(self.hidden, name="W1")(h)))))
        msg = msg * mask_attend[..., None]
        h_es_new = None
        if self.edge_mlp:  # REED's decoder edge update (W_edge, norm_edge)
            e = _ln("W_edge_norm")(jnp.concatenate([msg, h_es], -1))
            e = Dense(2 * self.hidden, name="W_edge_out")(gelu(Dense(3 * self.hidden, name="W_edge_in")(e)))
            h_es_new = _ln("norm_edge")(h_es + drop(e))
        h_v = _ln("norm1")(h_v + drop(msg.sum(-2) / self.scale))
        h_v = _ln("norm2")(h_v + drop(FeedForward(self.hidden, name="dense")(h_v)))
        return h_v * mask[..., None], h_es_new


class MPNN(nn.Module):
    hidden: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 3
    k: int = 30
    dropout: float = 0.1
    backbone_noise: float = 0.1   # Angstrom, Gaussian, added to the coordinates in training
    vocab: int = residues.VOCAB   # input tokens (20 aa + X + MASK)
    num_letters: int = 21         # output classes: 21 (20 aa + X; ProteinMPNN) or 22 (+ MASK; REED's head)
    decoder_edge_mlp: bool = False  # W_edge / norm_edge per decoder layer (REED), taps decoder{i}_edges
    update_edge: bool = False       # the next decoder layer reads h_ES_new (REED's --update_edge)
    learnable_node: bool = False    # learned initial node features (REED's --learnable_node), zeros at init

    @nn.compact
    def __call__(self, coords, mask, residue_idx, tokens, train: bool = False):
        if self.update_edge and not self.decoder_edge_mlp:
            raise ValueError("MPNN: update_edge needs decoder_edge_mlp (the layers that compute the new edges)")
        mask = mask.astype(jnp.float32)
        if train and self.backbone_noise > 0:
            coords = coords + self.backbone_noise * jax.random.normal(self.make_rng("noise"), coords.shape)
        e_idx = F.knn(coords[:, :, 1], mask, self.k)
        pos = Dense(16, name="embedding_linear")(jax.nn.one_hot(F.relative_offsets(residue_idx, e_idx),
                                                                2 * F.MAX_OFFSET + 2))
        e = jnp.concatenate([pos, F.rbf_features(coords, e_idx)], -1)
        e = _ln("norm_edges")(Dense(self.hidden, use_bias=False, name="edge_embedding")(e))
        h_e = Dense(self.hidden, name="W_e")(e)
        h_v = jnp.zeros(mask.shape + (self.hidden,), jnp.float32)
        if self.learnable_node:
            h_v = h_v + self.param("node_embeds", nn.initializers.zeros, (self.hidden,), jnp.float32)
        mask_attend = mask[:, :, None] * F.gather_edges(mask, e_idx)
        for i in range(self.encoder_layers):
            h_v, h_e = EncLayer(self.hidden, self.dropout, name=f"enc{i}")(h_v, h_e, e_idx, mask, mask_attend, train)
        taps = {"encoder_nodes": h_v, "encoder_edges": h_e, "e_idx": e_idx}
        h_s = nn.Embed(self.vocab, self.hidden, embedding_init=xavier, name="W_s")(tokens)
        h_es = jnp.concatenate([h_e, F.gather_edges(h_s, e_idx)], -1)
        taps["decoder_edges"] = h_es
        for i in range(self.decoder_layers):
            h_esv = jnp.concatenate([h_es, F.gather_edges(h_v, e_idx)], -1)
            h_v, h_es_new = DecLayer(self.hidden, self.dropout, edge_mlp=self.decoder_edge_mlp, name=f"dec{i}")(
                h_v, h_es, h_esv, mask, mask_attend, train)
            taps[f"decoder{i + 1}_nodes"] = h_v
            if h_es_new is not None:
                taps[f"decoder{i + 1}_edges"] = h_es_new
                if self.update_edge:
                    h_es = h_es_new
        return Dense(self.num_letters, name="W_out")(h_v), taps
