"""SiT-XL/2 REED on ImageNet 512x512 (SD-VAE latents 64x64x4, 1,024 tokens), REPA's 512 settings.

    python main.py --config=configs/imagenet512_sit_xl_2_reed.py --workdir=$WORKDIR --config.paths_root=/data/reed

As configs/imagenet_sit_xl_2_reed.py at 512: REPA's README runs its 256 command with --resolution=512
(SiT-XL/2, DINOv2-B/14 tokens after block 8, coefficient 0.5, batch 256, lr 1e-4) for train.py's default
400K steps; DINOv2 sees 448x448 inputs (32x32 = 1,024 patch tokens, one per SiT token); shards in
<paths_root>/shards/imagenet512; FID against ADM's VIRTUAL_imagenet512.npz (reed_jax/image/config.py:imagenet_config).
`:none|:reed|:repa` picks the evaluation's CFG preset.
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    return imagenet_config("XL", "reed", guidance=guidance, resolution=512)
