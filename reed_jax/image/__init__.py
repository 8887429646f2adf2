"""The image track: SiT on pixels or VAE latents, its sources, samplers and FID evaluation."""
