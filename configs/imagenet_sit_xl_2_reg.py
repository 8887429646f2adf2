"""SiT-XL/2 + REG on ImageNet 256x256 (SD-VAE latents): REG's published settings (Martinser/REG train.sh).

    python main.py --config=configs/imagenet_sit_xl_2_reg.py --workdir=$WORKDIR --config.paths_root=/data/reed
    python main.py --config=configs/imagenet_sit_xl_2_reg.py --workdir=$WORKDIR --mode=precompute  # first, once

REPA (DINOv2-B/14 patch tokens after block 8, w_align 0.5) plus DINOv2's CLS token (768-d, stored by
the precompute as target `dinov2_cls`) entangled with the latents: noised with the same t, projected
in as token 0, denoised with its own velocity loss (weight 0.03), generated jointly and dropped at
sampling (reed_jax/image/config.py:imagenet_config). The precompute of this config stores the CLS
vector beside the REPA tokens, in shards of its own (<paths_root>/shards/imagenet256_reg; REED's
hold the VLM vectors instead). Published checkpoints of REG are not importable (its class-token
layers and shared projector have no mapping in reed_jax/image/importer.py).

Published (REG README, ImageNet 256, FID-50K): without CFG 3.4 at 400K and 1.8 at 4M steps (REPA:
7.9 and 5.9); with CFG 2.3 on [0, 0.85] (the evaluation preset here) 1.36 at 800 epochs.
`:none|:reed|:repa|:haste` picks another evaluation preset.
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    return imagenet_config("XL", "reg", guidance=guidance)
