"""Latent tokenizers: the registry of KL autoencoders a latent config names (`data.tokenizer`).

A tokenizer is an architecture (`vae.AutoencoderKL`: block widths, ResNet blocks per level, latent
channels, downsampling 2^(levels-1), levels with self-attention), the weight-name format of its
published release, and the normalisation of its latents before the generator sees them:

    scale:  x0 = scale * z                              (SD-VAE: 0.18215, the LDM scale factor)
    stats:  x0 = scale * (z - mean) / std, per channel  (VA-VAE / LightningDiT: `latent_norm` with
            `latent_multiplier` 1.0, datasets/img_latent_dataset.py; REPA-E: `(z - latents_bias) *
            latents_scale` with latents_scale = 1/std, utils.normalize_latents, scale 1.0)

z = mean + std_post * eps is a sample of the encoder's posterior. The per-channel statistics are a
file shipped beside the tokenizer weights (`stats_candidates`): LightningDiT's `latents_stats.pt`
(`mean`, `std` of shape [1, C, 1, 1]) in the folder of `vavae-imagenet256-f16d32-dinov2.pt`, or
REPA-E's `<weights>-latents-stats.pt` (`latents_bias`, `latents_scale`; train_ldm_only.py reads
`args.vae_ckpt.replace(".pt", "-latents-stats.pt")`), or an `.npz` of either.

The affine normalisation is folded into the stored moments: the precompute writes the moments of
the normalised posterior, ((mean - m) / s, std_post / s), so `interpolants.x0_from_moments(k,
moments, data.latent_scale)` draws x0 = scale * (z - m) / s exactly as the references do, and the
decoder inverts it (`Normalisation.denormalise`). For scale-only tokenizers the moments are stored
as the VAE gives them (bit-identical to before the registry).

    tok = latents.get("va_vae_f16c32")
    tok.latent_shape(256)                 # (16, 16, 32): patch size 1 gives 256 tokens
    model, params = latents.build(tok, state_dict, key="precompute.vae_path")
    norm = latents.normalisation(tok, "precompute.vae_path", weights_path, scale=1.0)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from reed_jax.convert import weight_file
from reed_jax.image import convert_vae, vae as vae_lib


class TokenizerError(ValueError):
    """A tokenizer name, weight file or statistics file that does not fit; the message names the key."""


@dataclass(frozen=True)
class Tokenizer:
    name: str
    widths: tuple[int, ...]        # block widths, one per level (LDM: ch * ch_mult)
    layers: int                    # ResNet blocks per encoder level (the decoder has one more)
    latent: int                    # latent channels
    attn_levels: tuple[int, ...]   # encoder levels (0 = full resolution) with attention after each ResNet block
    scale: float                   # the multiplier of the (normalised) latents: data.latent_scale
    stats: bool                    # per-channel mean/std normalisation from a statistics file
    weights: str                   # name format of the published release: 'diffusers' or 'ldm'
    encoder_file: str              # file name under <paths_root>/weights/ of the imagenet presets
    decoder_file: str              # the decoder of evaluation (SD-VAE protocol: the ft-ema weights)
    source: str                    # where the architecture and the normalisation are published
    groups: int = 32

    @property
    def factor(self) -> int:
        """Spatial downsampling of images to latents."""
        return 2 ** (len(self.widths) - 1)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """[h, w, C] of the latents of a square `image_size` crop."""
        if image_size % self.factor:
            raise TokenizerError(f"data.image_size={image_size} is not a multiple of data.tokenizer={self.name!r}'s "
                                 f"downsampling {self.factor}")
        g = image_size // self.factor
        return (g, g, self.latent)

    def model(self, **overrides) -> vae_lib.AutoencoderKL:
        """The published architecture (`overrides`: e.g. tiny widths for tests)."""
        kw = dict(widths=self.widths, layers=self.layers, groups=self.groups, latent=self.latent,
                  attn_levels=self.attn_levels)
        return vae_lib.AutoencoderKL(**{**kw, **overrides})


_LDM_F16 = (128, 128, 256, 256, 512)  # LDM ch=128, ch_mult (1, 1, 2, 2, 4): VA-VAE vavae_f16d32.yaml, REPA-E VAE_F16D32
_SD = (128, 256, 512, 512)            # sd-vae-ft-mse config.json; REPA-E VAE_F8D4 ch_mult (1, 2, 4, 4)
REGISTRY: dict[str, Tokenizer] = {t.name: t for t in (
    Tokenizer("sd_vae_f8c4", _SD, 2, 4, (), 0.18215, False, "diffusers",
              "sd-vae-ft-mse.safetensors", "sd-vae-ft-ema.safetensors",
              "stabilityai/sd-vae-ft-mse (diffusers AutoencoderKL, scaling_factor 0.18215); REPA/REED encode with "
              "ft-mse and decode with ft-ema"),
    Tokenizer("e2e_sdvae_f8c4", _SD, 2, 4, (), 1.0, True, "diffusers",
              "e2e-sdvae.safetensors", "e2e-sdvae.safetensors",
              "REPA-E (Leng et al. 2025) E2E-SDVAE, huggingface REPA-E/e2e-sdvae (LDM names, models/autoencoder.py "
              "VAE_F8D4) and REPA-E/e2e-sdvae-hf (diffusers AutoencoderKL); stats: <weights>-latents-stats.pt"),
    Tokenizer("e2e_vavae_f16c32", _LDM_F16, 2, 32, (4,), 1.0, True, "diffusers",
              "e2e-vavae.safetensors", "e2e-vavae.safetensors",
              "REPA-E E2E-VAVAE (VA-VAE tuned end to end), REPA-E/e2e-vavae (VAE_F16D32, LDM names) and "
              "REPA-E/e2e-vavae-hf (diffusers); SiT-XL/1 on 16x16x32 latents"),
    Tokenizer("e2e_invae_f16c32", _LDM_F16, 2, 32, (4,), 1.0, True, "diffusers",
              "e2e-invae.safetensors", "e2e-invae.safetensors",
              "REPA-E E2E-INVAE (their ImageNet f16d32 VAE tuned end to end), REPA-E/e2e-invae and "
              "REPA-E/e2e-invae-hf; cache_latents.py encodes it with the f16d32 architecture"),
    Tokenizer("va_vae_f16c32", _LDM_F16, 2, 32, (4,), 1.0, True, "ldm",
              "vavae-imagenet256-f16d32-dinov2.pt", "vavae-imagenet256-f16d32-dinov2.pt",
              "VA-VAE (Yao et al. 2025, LightningDiT), hustvl/vavae-imagenet256-f16d32-dinov2 with its "
              "latents_stats.pt; tokenizer/configs/vavae_f16d32.yaml: ch 128, ch_mult (1, 1, 2, 2, 4), "
              "num_res_blocks 2, attn_resolutions [16], z_channels 32; latent_norm, latent_multiplier 1.0"),
)}
DEFAULT = "sd_vae_f8c4"


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str, key: str = "data.tokenizer") -> Tokenizer:
    if name not in REGISTRY:
        raise TokenizerError(f"{key}={name!r} is not a registered tokenizer; expected one of {list(REGISTRY)}")
    return REGISTRY[name]


def architecture(state_dict: dict, tok: Tokenizer, groups: int | None = None, key: str = "precompute.vae_path"):
    """(AutoencoderKL, diffusers-named state dict) of the weights: widths, blocks per level, latent
    channels and attention levels read from the state dict (LDM or diffusers names), so any widths
    (tests) load; the latent channels must be the tokenizer's."""
    sd = convert_vae.ldm_names(state_dict) if convert_vae.is_ldm(state_dict) else dict(state_dict)
    widths, attn, i = [], [], 0
    while f"encoder.down_blocks.{i}.resnets.0.conv1.weight" in sd:
        widths.append(int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]))
        if any(k.startswith(f"encoder.down_blocks.{i}.attentions.") for k in sd):
            attn.append(i)
        i += 1
    if not widths or "quant_conv.weight" not in sd:
        raise TokenizerError(f"{key}: not an AutoencoderKL state dict (diffusers or LDM names) of data.tokenizer="
                             f"{tok.name!r}")
    layers = len({m.group(1) for k in sd if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
    latent = int(sd["quant_conv.weight"].shape[0]) // 2
    if latent != tok.latent:
        raise TokenizerError(f"{key}: the weights have {latent} latent channels; data.tokenizer={tok.name!r} has "
                             f"{tok.latent}")
    mid = any(k.startswith("encoder.mid_block.attentions.") for k in sd)
    model = vae_lib.AutoencoderKL(widths=tuple(widths), layers=layers, groups=groups or tok.groups, latent=latent,
                                  attn_levels=tuple(attn), mid_attention=mid)
    return model, sd


def build(tok: Tokenizer, state_dict: dict, groups: int | None = None, key: str = "precompute.vae_path"):
    """(AutoencoderKL, params) of a tokenizer's weights (structure checked against the model)."""
    import jax

    model, sd = architecture(state_dict, tok, groups, key)
    expected = jax.eval_shape(lambda: vae_lib.init_params(model, size=model.factor * 4))
    return model, convert_vae.from_diffusers(sd, expected)


def load(tok: Tokenizer, path: str, groups: int | None = None, key: str = "precompute.vae_path"):
    """`build` of the weight file at `path` (`key`: the config key naming it)."""
    return build(tok, weight_file.load(path, key), groups, key)


# ----------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalisation:
    """x0 = scale * (z - mean) / std per channel (mean 0, std 1 for scale-only tokenizers)."""
    scale: float
    mean: np.ndarray | None = None  # [C] float32
    std: np.ndarray | None = None   # [C] float32

    def normalise_moments(self, moments):
        """Posterior moments [..., 2C] = (mean, std) of z -> those of (z - m) / s (what the shards store)."""
        if self.mean is None:
            return moments
        import jax.numpy as jnp

        c = moments.shape[-1] // 2
        mu, sd = moments[..., :c], moments[..., c:]
        return jnp.concatenate([(mu - self.mean) / self.std, sd / self.std], axis=-1)

    def denormalise(self, latents):
        """Generator latents [..., C] (x0's space) -> z for `AutoencoderKL.decode`."""
        z = latents / self.scale
        return z if self.mean is None else z * self.std + self.mean


def stats_candidates(weights_path: str) -> list[str]:
    """Where the statistics of the tokenizer at `weights_path` may lie: REPA-E's
    `<stem>-latents-stats.pt`, LightningDiT's `latents_stats.pt` in the same folder, or `.npz` twins."""
    stem, folder = os.path.splitext(weights_path)[0], os.path.dirname(weights_path)
    return [stem + "-latents-stats.pt", stem + "-latents-stats.npz", os.path.join(folder, "latents_stats.pt"),
            os.path.join(folder, "latents_stats.npz")]


def read_stats(d: dict, where: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean [C], std [C]) from a statistics dict: {mean, std} (LightningDiT), {latents_bias,
    latents_scale} (REPA-E; std = 1 / latents_scale) or {latents_mean, latents_std}."""
    if "mean" in d and "std" in d:
        mean, std = d["mean"], d["std"]
    elif "latents_bias" in d and "latents_scale" in d:
        mean, std = d["latents_bias"], 1.0 / np.asarray(d["latents_scale"], np.float64)
    elif "latents_mean" in d and "latents_std" in d:
        mean, std = d["latents_mean"], d["latents_std"]
    else:
        raise TokenizerError(f"{where}: expected arrays (mean, std), (latents_bias, latents_scale) or (latents_mean, "
                             f"latents_std); has {sorted(d)}")
    mean, std = (np.asarray(a, np.float32).reshape(-1) for a in (mean, std))
    if mean.shape != (channels,) or std.shape != (channels,):
        raise TokenizerError(f"{where}: statistics of {mean.size} and {std.size} values; the tokenizer has {channels} "
                             f"latent channels")
    if not np.all(std > 0):
        raise TokenizerError(f"{where}: every per-channel std must be positive")
    return mean, std


def normalisation(tok: Tokenizer, key: str, weights_path: str, scale: float) -> Normalisation:
    """The tokenizer's normalisation; per-channel statistics read from the file beside `weights_path`."""
    if not tok.stats:
        return Normalisation(float(scale))
    found = [p for p in stats_candidates(weights_path) if os.path.exists(p)]
    if not found:
        raise TokenizerError(f"data.tokenizer={tok.name!r} normalises latents per channel: its statistics file must "
                             f"lie beside {key}={weights_path!r}, as one of {stats_candidates(weights_path)}")
    mean, std = read_stats(weight_file.load(found[0], key), found[0], tok.latent)
    return Normalisation(float(scale), mean, std)
