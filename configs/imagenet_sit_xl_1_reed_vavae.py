"""SiT-XL/1 REED on VA-VAE latents (LightningDiT's f16c32 tokenizer, 16x16x32, 256 tokens).

    python main.py --config=configs/imagenet_sit_xl_1_reed_vavae.py --workdir=$WORKDIR --config.paths_root=/data/reed

REED's published recipe (configs/imagenet_sit_xl_2_reed.py) with the tokenizer swapped: SiT-XL/1 on
16x16x32 VA-VAE latents (the same 256 tokens as XL/2 on SD-VAE's 32x32x4, so DINOv2-B's 16x16 tokens
still align one to one), latents normalised per channel with VA-VAE's latents_stats.pt and
multiplier 1.0 as LightningDiT does. This combination is not published: no reference FID. Weights
under <paths_root>/weights/: vavae-imagenet256-f16d32-dinov2.pt and latents_stats.pt
(huggingface hustvl/vavae-imagenet256-f16d32-dinov2). `:none|:reed|:repa` picks the CFG preset.
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    return imagenet_config("XL", "reed", tokenizer="va_vae_f16c32", guidance=guidance)
