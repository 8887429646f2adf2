"""SiT-XL/2 + HASTE on ImageNet 256x256 (SD-VAE latents): HASTE's published settings (NUS-HPC-AI-Lab/HASTE run.sh).

    python main.py --config=configs/imagenet_sit_xl_2_haste.py --workdir=$WORKDIR --config.paths_root=/data/reed
    python main.py --config=configs/imagenet_sit_xl_2_haste.py --workdir=$WORKDIR --mode=precompute  # first, once

REPA (DINOv2-B/14 patch tokens after block 8, w_align 0.5) plus the attention maps of SiT blocks 5-8
(first 12 of 16 heads) aligned head for head to DINOv2-B blocks 9-12 (CLS removed, rows renormalised
over the 256 patch keys) by cross-entropy, weight 0.5 over the four pairs; every alignment term is
switched off at step 250K (curriculum.align.stop_step). DINOv2 runs inside the step on stored crops
(encoder.mode='online'; its maps would take 1.5 MiB per image on disk), so the precompute of this
config stores crops (field `pixels`) and SD-VAE moments, in <paths_root>/shards/imagenet256_crops.
DINOv2 runs once per step for the REPA tokens and the four maps (one forward, every output), and
keeps running after the stop (the alignment terms are weighted 0 from then on; HASTE's code does the same).

Published: HASTE reaches plain SiT-XL/2's FID in 50 epochs and REPA's best in 500 (28x fewer steps;
arXiv 2505.16792 abstract); evaluation with CFG 1.65 on [0, 0.72] at 2.5M steps (the preset here).
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    return imagenet_config("XL", "haste", guidance=guidance)
