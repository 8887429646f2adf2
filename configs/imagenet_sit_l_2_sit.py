"""SiT-L/2 SIT on ImageNet 256x256 (SD-VAE latents), published hyperparameters.

    python main.py --config=configs/imagenet_sit_l_2_sit.py --workdir=$WORKDIR --config.paths_root=/data/reed

Every input path (images, SD-VAE, DINOv2, VLM vectors, shards, Inception, reference batch) derives
from `paths_root`; see reed_jax/config.py:imagenet_config for the layout. Shards come from
`--mode=precompute` with the REED config (the same shards serve all three variants).

Evaluation (`--mode=evaluate`, SDE 250 steps) uses this variant's published guidance: no CFG.
`--config=configs/imagenet_sit_l_2_sit.py:none` evaluates without CFG, `:reed` or `:repa` with
REED's or REPA's preset (reed_jax.config.GUIDANCE_PRESETS).
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    return imagenet_config("L", "sit", guidance=guidance)
