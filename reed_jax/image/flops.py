"""Analytic FLOP counts (1 multiply-add = 2 FLOPs) from the config, for throughput and MFU.

SiT-XL/2 at 256x256 (32x32x4 latents) is 118.6 GMACs = 237 GFLOPs per image forward; a training
step costs ~3x forward (forward + backward), plus the projectors.
"""
from __future__ import annotations

# Peak dense bf16 FLOP/s per device (PROTOCOLS.md), keyed by a lower-case substring of device_kind.
PEAK_BF16 = {"a100": 312e12, "h100": 989e12, "h200": 989e12, "tpu v4": 275e12, "tpu v5 lite": 197e12,
             "tpu v5e": 197e12, "tpu v5p": 459e12, "tpu v5": 459e12, "tpu v6": 918e12}


def sit_forward_flops(model_cfg, data_shape, targets=None) -> dict[str, float]:
    """FLOPs of one image's forward pass: {'backbone', 'projectors'}.

    Per token and block: qkv + proj + MLP = 2 (3D^2 + D^2 + 2 r D^2) and attention 4 T D; per
    image: adaLN 2 D 6D per block, patch embedding, final layer, timestep MLP.
    """
    h, w, c = data_shape
    p, d, depth, r = model_cfg.patch_size, model_cfg.hidden, model_cfg.depth, model_cfg.mlp_ratio
    t = (h // p) * (w // p)
    per_block = t * 2 * (4 * d * d + 2 * r * d * d) + 4 * t * t * d + 2 * d * 6 * d
    embed = 2 * t * p * p * c * d + 2 * (256 * d + d * d)
    final = 2 * d * 2 * d + 2 * t * d * p * p * c
    proj = 0.0
    width = model_cfg.projector_width
    for tg in (targets or {}).values():
        if tg.get("kind", "features") != "features":  # HASTE's attention targets: no projector (their
            continue                                  # logits' q k^T is a part of the attention counted above)
        n = 1 if tg.pooled else t
        proj += 2 * n * (d * width + width * width + width * tg.dim)
    return {"backbone": float(depth * per_block + embed + final), "projectors": float(proj)}


def train_flops_per_image(model_cfg, data_shape, targets=None) -> float:
    """~3x the forward (one forward, a backward of twice its cost)."""
    f = sit_forward_flops(model_cfg, data_shape, targets)
    return 3.0 * (f["backbone"] + f["projectors"])


def peak_flops(device_kind: str) -> float | None:
    kind = device_kind.lower()
    for key, val in PEAK_BF16.items():
        if key in kind:
            return val
    return None
