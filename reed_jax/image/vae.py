"""KL autoencoders (diffusers `AutoencoderKL`, the LDM / VQGAN-KL architecture) in Flax, NHWC:
encoder to latent moments, decoder to pixels.

The defaults are `stabilityai/sd-vae-ft-mse` / `sd-vae-ft-ema` (block widths 128, 256, 512, 512;
2 ResNet blocks per level in the encoder, 3 in the decoder; one self-attention block in each mid
block; GroupNorm(32, eps 1e-6); SiLU; 4 latent channels, 8x downsampling). `widths` (one level
each; downsampling 2^(levels-1)), `layers`, `latent`, `attn_levels` (levels with a self-attention
block after each ResNet block, as diffusers' AttnDownEncoderBlock2D / AttnUpDecoderBlock2D and
LDM's `attn_resolutions`: VA-VAE f16c32 attends at its last, 16x16 level) and `mid_attention`
describe the other tokenizers of `reed_jax.image.latents`, and any widths serve tests. Param names
mirror diffusers' with list indices joined (`down_blocks_0/resnets_1/conv1`), so
`reed_jax.image.convert_vae.from_diffusers` is a rename (`from_ldm` renames LDM names first).

    vae = AutoencoderKL()                                   # the SD configuration
    moments = vae.apply(p, x, method=vae.encode)            # x [B, 256, 256, 3] in [-1, 1] -> [B, 32, 32, 8]
    images = vae.apply(p, latents / SCALE, method=vae.decode)  # -> [B, 256, 256, 3] (about [-1, 1])

`encode` returns (mean, std) concatenated on channels, std = exp(logvar / 2) with logvar clipped to
[-30, 20] (diffusers' DiagonalGaussianDistribution), which is what the shards store;
`x0 = SCALE * (mean + std * eps)` (`diffusion.interpolants.x0_from_moments`).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

SCALE = 0.18215


def _norm(groups, name):
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, name=name)


def _conv(features, k, name, stride=1, padding="SAME"):
    pad = ((k // 2, k // 2),) * 2 if padding == "SAME" else padding
    return nn.Conv(features, (k, k), strides=(stride, stride), padding=pad, name=name)


class ResnetBlock(nn.Module):
    out: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = _conv(self.out, 3, "conv1")(nn.silu(_norm(self.groups, "norm1")(x)))
        h = _conv(self.out, 3, "conv2")(nn.silu(_norm(self.groups, "norm2")(h)))
        if x.shape[-1] != self.out:
            x = _conv(self.out, 1, "conv_shortcut")(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all positions, GroupNorm first, residual."""
    groups: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        t = _norm(self.groups, "group_norm")(x).reshape(b, h * w, c)
        q, k, v = (nn.Dense(c, name=n)(t) for n in ("to_q", "to_k", "to_v"))
        out = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0]
        return x + nn.Dense(c, name="to_out_0")(out).reshape(b, h, w, c)


class MidBlock(nn.Module):
    channels: int
    groups: int
    attention: bool = True

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock(self.channels, self.groups, name="resnets_0")(x)
        if self.attention:
            x = AttentionBlock(self.groups, name="attentions_0")(x)
        return ResnetBlock(self.channels, self.groups, name="resnets_1")(x)


class Downsample(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):  # diffusers pads (0, 1, 0, 1) then a 3x3 stride-2 VALID conv
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(self.channels, 3, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2
        return _conv(self.channels, 3, "conv")(x)


class Level(nn.Module):
    """`layers` ResNet blocks (each followed by self-attention when `attention`), then the level's
    resampler (`Downsample` in the encoder, `Upsample` in the decoder, none at the last level),
    named as diffusers names them."""
    out: int
    layers: int
    groups: int
    resample: type | None = None  # Downsample or Upsample
    attention: bool = False

    @nn.compact
    def __call__(self, x):
        for j in range(self.layers):
            x = ResnetBlock(self.out, self.groups, name=f"resnets_{j}")(x)
            if self.attention:
                x = AttentionBlock(self.groups, name=f"attentions_{j}")(x)
        if self.resample is None:
            return x
        name = "downsamplers_0" if self.resample is Downsample else "upsamplers_0"
        return self.resample(self.out, name=name)(x)


class Encoder(nn.Module):
    widths: Sequence[int]
    layers: int
    groups: int
    latent: int
    attn_levels: Sequence[int] = ()
    mid_attention: bool = True

    @nn.compact
    def __call__(self, x):
        x = _conv(self.widths[0], 3, "conv_in")(x)
        for i, w in enumerate(self.widths):
            last = i == len(self.widths) - 1
            x = Level(w, self.layers, self.groups, None if last else Downsample, i in self.attn_levels,
                      name=f"down_blocks_{i}")(x)
        x = MidBlock(self.widths[-1], self.groups, self.mid_attention, name="mid_block")(x)
        x = nn.silu(_norm(self.groups, "conv_norm_out")(x))
        return _conv(2 * self.latent, 3, "conv_out")(x)


class Decoder(nn.Module):
    """up_blocks_i is encoder level L-1-i (the lowest resolution first), with its attention."""
    widths: Sequence[int]
    layers: int
    groups: int
    out_channels: int
    attn_levels: Sequence[int] = ()
    mid_attention: bool = True

    @nn.compact
    def __call__(self, z):
        rev = list(reversed(self.widths))
        x = _conv(rev[0], 3, "conv_in")(z)
        x = MidBlock(rev[0], self.groups, self.mid_attention, name="mid_block")(x)
        for i, w in enumerate(rev):
            last = i == len(rev) - 1
            x = Level(w, self.layers + 1, self.groups, None if last else Upsample, len(rev) - 1 - i in self.attn_levels,
                      name=f"up_blocks_{i}")(x)
        x = nn.silu(_norm(self.groups, "conv_norm_out")(x))
        return _conv(self.out_channels, 3, "conv_out")(x)


class AutoencoderKL(nn.Module):
    widths: Sequence[int] = (128, 256, 512, 512)
    layers: int = 2
    groups: int = 32
    latent: int = 4
    channels: int = 3
    attn_levels: Sequence[int] = ()  # encoder level indices (0 = full resolution) with attention blocks
    mid_attention: bool = True

    def setup(self):
        levels, mid = tuple(self.attn_levels), self.mid_attention
        self.encoder = Encoder(tuple(self.widths), self.layers, self.groups, self.latent, levels, mid)
        self.decoder = Decoder(tuple(self.widths), self.layers, self.groups, self.channels, levels, mid)
        self.quant_conv = nn.Conv(2 * self.latent, (1, 1))
        self.post_quant_conv = nn.Conv(self.latent, (1, 1))

    def encode(self, x):
        """[B, H, W, C] in [-1, 1] -> moments [B, H/f, W/f, 2 * latent]: (mean, std)."""
        mean, logvar = jnp.split(self.quant_conv(self.encoder(x)), 2, axis=-1)
        return jnp.concatenate([mean, jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))], axis=-1)

    @property
    def factor(self) -> int:
        """Spatial downsampling: 2 per level but the last."""
        return 2 ** (len(self.widths) - 1)

    def decode(self, z):
        """Unscaled latents z = latents / SCALE (or `latents.Normalisation.denormalise`),
        [B, h, w, latent] -> images [B, h*f, w*f, C]."""
        return self.decoder(self.post_quant_conv(z))

    def __call__(self, x):
        moments = self.encode(x)
        return self.decode(moments[..., :self.latent])


def init_params(vae: AutoencoderKL, size: int = 32, seed: int = 0) -> dict:
    return vae.init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, vae.channels)))["params"]
