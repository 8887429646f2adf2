"""Sample grids as PNG."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] float in [-1, 1] -> uint8, truncated as the published pipelines quantise samples
    (REPA/REED `generate.py`: `clamp(255 (x + 1) / 2, 0, 255).to(uint8)` in float32; ADM's
    `image_sample.py` likewise truncates): grey level floor(255 (x + 1) / 2), not rounded (rounding
    would lift every pixel by half a grey level on average against the published numbers)."""
    x = np.asarray(images, np.float32)
    return np.clip(255.0 * ((x + 1.0) / 2.0), 0.0, 255.0).astype(np.uint8)


def grid(images: np.ndarray, nrow: int, pad: int = 1) -> np.ndarray:
    """[N, H, W, C] uint8 -> one [rows*(H+pad)+pad, nrow*(W+pad)+pad, C] image, row-major."""
    n, h, w, c = images.shape
    rows = -(-n // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return out


def save_grid(images: np.ndarray, nrow: int, path: str, upscale: int = 1) -> str:
    """images [N, H, W, C] in [-1, 1] -> PNG at `path` (nearest-neighbour upscaled)."""
    g = grid(to_uint8(images), nrow)
    if upscale > 1:
        g = g.repeat(upscale, 0).repeat(upscale, 1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(path)
    return path
