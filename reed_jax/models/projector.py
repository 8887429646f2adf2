"""The alignment projector every track shares, and the logically-partitioned Dense it is made of.

`Projector(width, z_dim, hidden_layers)`: hidden_layers x (Linear -> SiLU) at `width`, then Linear
to the target width `z_dim` (xavier init). REPA/REED's image projector has 2 hidden layers
(D -> 2048 -> 2048 -> z); the protein track's have 1 (128 -> 768 -> 384). Layer names are
`dense_0, dense_2, dense_4, ...` (the PyTorch Sequential indices, so converters map 1:1).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dense(features: int, axes: tuple[str, str], init=xavier, dtype: Any = jnp.float32, name: str | None = None):
    """nn.Dense whose kernel [in, out] carries logical names `axes` and its bias `axes[1]`."""
    return nn.Dense(features, dtype=dtype, name=name, kernel_init=nn.with_logical_partitioning(init, axes),
                    bias_init=nn.with_logical_partitioning(zeros, axes[1:]))


class Projector(nn.Module):
    """[..., D] -> [..., z_dim], float32."""
    width: int
    z_dim: int
    hidden_layers: int = 2

    @nn.compact
    def __call__(self, h):
        for i in range(self.hidden_layers):
            h = nn.silu(dense(self.width, ("embed" if i == 0 else "proj_in", "proj"), name=f"dense_{2 * i}")(h))
        return dense(self.z_dim, ("proj_in", "target"), name=f"dense_{2 * self.hidden_layers}")(h)


class ConvProjector(nn.Module):
    """iREPA's projector: one `kernel` x `kernel` convolution (SAME padding) over the square token grid,
    [B, T, D] -> [B, T, z_dim] float32 (T = g x g tokens, row-major as the patch embedding lays them
    out). Unlike the per-token MLP it mixes each token with its spatial neighbours."""
    z_dim: int
    kernel: int = 3

    @nn.compact
    def __call__(self, h):
        b, t, d = h.shape
        g = int(round(t ** 0.5))
        if g * g != t:
            raise ValueError(f"ConvProjector needs a square token grid; got {t} tokens")
        k = self.kernel
        x = nn.Conv(self.z_dim, (k, k), padding="SAME", name="conv",
                    kernel_init=nn.with_logical_partitioning(xavier, (None, None, "embed", "target")),
                    bias_init=nn.with_logical_partitioning(zeros, ("target",)))(h.reshape(b, g, g, d))
        return x.reshape(b, t, self.z_dim)
