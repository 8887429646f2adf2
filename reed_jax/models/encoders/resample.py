"""PyTorch-exact bicubic resampling as explicit interpolation matrices (`jax.image.resize` uses
a = -0.5 and other conventions, which shifts DINOv2 features).

`bicubic_matrix(n_in, n_out)` reproduces `torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)` along one axis: source coordinate `(dst + 0.5) * s - 0.5` with
`s = n_in / n_out`, or `s = 1 / scale_factor` when the caller passed a scale factor (the
torch-hub DINOv2 resamples its position embeddings with `scale_factor = (n_out + 0.1) / n_in`);
Keys' cubic with a = -0.75 over 4 taps, indices clamped to the border. With `antialias=True`
(DINOv2 with registers) a downsampling axis uses PyTorch's anti-aliased kernel instead: the
cubic (a = -0.5) stretched by the scale, normalised per output.
Coordinates are computed in float32, as PyTorch does for float32 tensors.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int, scale_factor: float | None = None, antialias: bool = False) -> np.ndarray:
    """[n_out, n_in] float32 matrix M with out = M @ in along one axis."""
    scale = np.float32(1.0 / scale_factor) if scale_factor else np.float32(n_in) / np.float32(n_out)
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if antialias and scale > 1:
        support = 2.0 * float(scale)  # bicubic support (2) stretched by the downscale factor
        for i in range(n_out):
            center = float(scale) * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            j = np.arange(lo, hi)
            w = _cubic((j - center + 0.5) / float(scale), -0.5)
            m[i, lo:hi] = w / w.sum()
        return m.astype(np.float32)
    src = (rows.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src).astype(np.int64)
    t = (src - np.floor(src)).astype(np.float64)
    for k in range(4):
        w = _cubic(t - (k - 1), -0.75)  # taps base-1 .. base+2 at distances t+1, t, 1-t, 2-t
        idx = np.clip(base - 1 + k, 0, n_in - 1)
        np.add.at(m, (rows, idx), w)
    return m.astype(np.float32)


def resize_bicubic(x, size: tuple[int, int], scale_factor: tuple[float, float] | None = None,
                   antialias: bool = False):
    """[N, H, W, C] -> [N, size[0], size[1], C], PyTorch bicubic (see module docstring)."""
    _, h, w, _ = x.shape
    sh, sw = scale_factor if scale_factor else (None, None)
    mh = jnp.asarray(bicubic_matrix(h, size[0], sh, antialias))
    mw = jnp.asarray(bicubic_matrix(w, size[1], sw, antialias))
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision="highest")
    return jnp.einsum("pw,nowc->nopc", mw, x, precision="highest")
