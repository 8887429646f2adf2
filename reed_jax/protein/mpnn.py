"""ProteinMPNN-style message passing for masked discrete diffusion (non-autoregressive decoder).

`MPNN(...)(coords, mask, residue_idx, tokens, train)`:
  coords [B, L, 4, 3] backbone N, CA, C, O (Angstrom), mask [B, L] (1 = real residue),
  residue_idx [B, L] (position along the chain), tokens [B, L] int (0..20 amino acids / X,
  21 = MASK). Returns (logits [B, L, 21] over the 20 amino acids + X, taps) where taps holds
  `encoder_nodes` [B, L, H], `encoder_edges` [B, L, k, H], `decoder{i}_nodes` [B, L, H] (after
  decoder layer i, 1-based) and `decoder_edges` [B, L, k, 2H] (h_E with the neighbour's token
  embedding, what every decoder layer reads), and `e_idx` [B, L, k] (the kNN graph).

The layers are ProteinMPNN's (and colabdesign's): features -> W_e -> encoder layers (node and
edge updates, messages summed over neighbours / 30) -> decoder layers that see, for every
neighbour j (itself included: the nearest neighbour is the residue itself), [h_E_ij, h_S_j, h_V_j]
with h_S the embedding of the current (noisy) token: ProteinMPNN's decoder with an all-visible
order. Parameter names follow colabdesign's haiku modules so `convert.proteinmpnn` maps its
released weights 1:1. Padded neighbours (chains shorter than k in a padded batch) are masked in
the decoder too, so outputs do not depend on the padding.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from reed_jax.protein import features as F, residues

gelu = functools.partial(nn.gelu, approximate=False)
LN_EPS = 1e-5


def _ln(name):
    return nn.LayerNorm(epsilon=LN_EPS, name=name)


class FeedForward(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.hidden, name="W_out")(gelu(nn.Dense(4 * self.hidden, name="W_in")(h)))


class EncLayer(nn.Module):
    hidden: int
    dropout: float
    scale: float = 30.0

    def _messages(self, h_v, h_e, e_idx, names):
        h_ev = jnp.concatenate([jnp.broadcast_to(h_v[:, :, None], h_e.shape[:-1] + (h_v.shape[-1],)), h_e,
                                F.gather_edges(h_v, e_idx)], -1)
        a, b, c = (nn.Dense(self.hidden, name=n) for n in names)
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
    hidden: int
    dropout: float
    scale: float = 30.0

    @nn.compact
    def __call__(self, h_v, h_esv, mask, mask_attend, train: bool):
        drop = lambda x: nn.Dropout(self.dropout, deterministic=not train)(x)
        h = jnp.concatenate([jnp.broadcast_to(h_v[:, :, None], h_esv.shape[:-1] + (h_v.shape[-1],)), h_esv], -1)
        msg = nn.Dense(self.hidden, name="W3")(gelu(nn.Dense(self.hidden, name="W2")(gelu(
            nn.Dense(self.hidden, name="W1")(h)))))
        msg = msg * mask_attend[..., None]
        h_v = _ln("norm1")(h_v + drop(msg.sum(-2) / self.scale))
        h_v = _ln("norm2")(h_v + drop(FeedForward(self.hidden, name="dense")(h_v)))
        return h_v * mask[..., None]


class MPNN(nn.Module):
    hidden: int = 128
    encoder_layers: int = 3
    decoder_layers: int = 3
    k: int = 30
    dropout: float = 0.1
    backbone_noise: float = 0.1   # Angstrom, Gaussian, added to the coordinates in training
    vocab: int = residues.VOCAB   # input tokens (20 aa + X + MASK)
    num_letters: int = 21         # output classes (20 aa + X); the MASK is never predicted

    @nn.compact
    def __call__(self, coords, mask, residue_idx, tokens, train: bool = False):
        mask = mask.astype(jnp.float32)
        if train and self.backbone_noise > 0:
            coords = coords + self.backbone_noise * jax.random.normal(self.make_rng("noise"), coords.shape)
        e_idx = F.knn(coords[:, :, 1], mask, self.k)
        pos = nn.Dense(16, name="embedding_linear")(jax.nn.one_hot(F.relative_offsets(residue_idx, e_idx),
                                                                   2 * F.MAX_OFFSET + 2))
        e = jnp.concatenate([pos, F.rbf_features(coords, e_idx)], -1)
        e = _ln("norm_edges")(nn.Dense(self.hidden, use_bias=False, name="edge_embedding")(e))
        h_e = nn.Dense(self.hidden, name="W_e")(e)
        h_v = jnp.zeros(mask.shape + (self.hidden,), jnp.float32)
        mask_attend = mask[:, :, None] * F.gather_edges(mask, e_idx)
        for i in range(self.encoder_layers):
            h_v, h_e = EncLayer(self.hidden, self.dropout, name=f"enc{i}")(h_v, h_e, e_idx, mask, mask_attend, train)
        taps = {"encoder_nodes": h_v, "encoder_edges": h_e, "e_idx": e_idx}
        h_s = nn.Embed(self.vocab, self.hidden, name="W_s")(tokens)
        h_es = jnp.concatenate([h_e, F.gather_edges(h_s, e_idx)], -1)
        taps["decoder_edges"] = h_es
        for i in range(self.decoder_layers):
            h_esv = jnp.concatenate([h_es, F.gather_edges(h_v, e_idx)], -1)
            h_v = DecLayer(self.hidden, self.dropout, name=f"dec{i}")(h_v, h_esv, mask, mask_attend, train)
            taps[f"decoder{i + 1}_nodes"] = h_v
        return nn.Dense(self.num_letters, name="W_out")(h_v), taps
