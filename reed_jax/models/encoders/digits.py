"""Frozen encoders of the embedded default (scikit-learn digits, 8x8x1 in [-1, 1]).

`DigitsEncoder` (a CNN) gives REED's targets: `tokens` [16, 64] (its stride-2 4x4 feature map,
row-major, the same grid as SiT/2's tokens on 8x8 inputs) and `pooled` [128] (the penultimate
vector, the second "modality"). `DigitsFDNet` is a different architecture (an MLP), trained with a
different seed, that gives the features of the digits Frechet distance and the classifier of
the sample accuracy, so the metric is never the training target.
"""
from __future__ import annotations

import flax.linen as nn


class DigitsEncoder(nn.Module):
    token_dim: int = 64
    pooled_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        """x: [B, 8, 8, 1] -> {'tokens': [B, 16, token_dim], 'pooled': [B, pooled_dim], 'logits': [B, 10]}."""
        h = nn.gelu(nn.Conv(32, (3, 3))(x))
        h = nn.gelu(nn.Conv(self.token_dim, (3, 3), strides=(2, 2))(h))
        h = nn.Conv(self.token_dim, (3, 3))(h)
        tokens = h.reshape(h.shape[0], -1, h.shape[-1])
        pooled = nn.gelu(nn.Dense(self.pooled_dim)(nn.gelu(tokens).mean(axis=1)))
        return {"tokens": tokens, "pooled": pooled, "logits": nn.Dense(self.num_classes)(pooled)}


class DigitsFDNet(nn.Module):
    feature_dim: int = 64
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        """x: [B, 8, 8, 1] -> {'features': [B, feature_dim], 'logits': [B, 10]}."""
        h = x.reshape(x.shape[0], -1)
        h = nn.gelu(nn.Dense(256)(h))
        feats = nn.gelu(nn.Dense(self.feature_dim)(h))
        return {"features": feats, "logits": nn.Dense(self.num_classes)(feats)}
