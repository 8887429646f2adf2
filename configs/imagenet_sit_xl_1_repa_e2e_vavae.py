"""SiT-XL/1 REPA on REPA-E's E2E-VAVAE latents (16x16x32, 256 tokens): REPA-E's frozen-VAE result.

    python main.py --config=configs/imagenet_sit_xl_1_repa_e2e_vavae.py --workdir=$WORKDIR --config.paths_root=/data/reed

REPA-E (Leng et al. 2025, github.com/End2End-Diffusion/REPA-E README, "Traditional Latent Diffusion
Model Training (Frozen VAE)"): train_ldm_only.py with --model=SiT-XL/1 --vae=f16d32 (E2E-VAVAE)
--enc-type=dinov2-vit-b --encoder-depth=8 --proj-coeff=0.5 --batch-size=256 --learning-rate=1e-4
--path-type=linear --prediction=v --max-train-steps=4000000: gFID-50K 1.83 without CFG, 1.26 with
--cfg-scale=2.5 --guidance-low=0.0 --guidance-high=0.75 (SDE, 250 steps). Weights under
<paths_root>/weights/: e2e-vavae.safetensors (REPA-E/e2e-vavae-hf's diffusion_pytorch_model.safetensors,
or their LDM-named .pt) with its e2e-vavae-latents-stats.pt beside it (reed_jax/image/latents.py).
Default: REPA-E's CFG; `:none` evaluates without CFG (the 1.83 row); `:reed|:repa` the presets.
"""
from reed_jax.image.config import imagenet_config


def get_config(guidance: str = ""):
    c = imagenet_config("XL", "repa", tokenizer="e2e_vavae_f16c32", guidance=guidance)
    if not guidance:
        c.sample.update(cfg_scale=2.5, guidance_lo=0.0, guidance_hi=0.75)  # REPA-E's 1.26
    return c
