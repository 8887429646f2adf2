"""SiT-B/2 REPA on ImageNet 256x256 (SD-VAE latents), published hyperparameters.

    python main.py --config=configs/imagenet_sit_b_2_repa.py --workdir=$WORKDIR --config.data.dir=$SHARDS
"""
from reed_jax.config import imagenet_config


def get_config():
    return imagenet_config("B", "repa")
