"""Deterministic random weights for parity fixtures too large to store (the FID Inception has 24M
parameters): the hand-run fixture script loads these into the PyTorch reference, the tests
regenerate them from the stored key list and seed. No torch here."""
from __future__ import annotations

import numpy as np


def random_state_dict(keys, shapes, seed: int) -> dict[str, np.ndarray]:
    """Conv/linear weights He-normal, BN scale U(0.8, 1.2), biases N(0, 0.1); running statistics
    are placeholders (the fixture stores the calibrated ones)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in zip(keys, shapes):
        shape = tuple(int(s) for s in shape)
        if k.endswith("num_batches_tracked"):
            out[k] = np.zeros(shape, np.int64)
        elif k.endswith("running_mean"):
            out[k] = np.zeros(shape, np.float32)
        elif k.endswith("running_var"):
            out[k] = np.ones(shape, np.float32)
        elif k.endswith("bn.weight"):
            out[k] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif k.endswith("bias"):
            out[k] = rng.normal(0, 0.1, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[k] = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    return out


def write_tiny_image_weights(d) -> tuple[str, str]:
    """The parity fixtures' tiny random SD-VAE (diffusers names, 8 groups, x2 down) and DINOv2
    (transformers names, width 16, 2 heads) as .npz weight files in `d`: (vae path, dinov2 path)."""
    import os

    fix = os.path.join(os.path.dirname(__file__), "fixtures")
    vae = np.load(os.path.join(fix, "vae_parity.npz"))
    np.savez(os.path.join(d, "vae.npz"), **{k[3:]: vae[k] for k in vae.files if k.startswith("sd/")})
    dino = np.load(os.path.join(fix, "dinov2_parity.npz"))
    np.savez(os.path.join(d, "dinov2.npz"), **{k[len("plain/sd/"):]: dino[k] for k in dino.files
                                               if k.startswith("plain/sd/")})
    return os.path.join(d, "vae.npz"), os.path.join(d, "dinov2.npz")
