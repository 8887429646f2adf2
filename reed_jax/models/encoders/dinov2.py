"""DINOv2 ViT-S/B/L/G /14 (with or without registers) in Flax, NHWC, frozen-encoder inference.

Param names follow the torch-hub checkpoints (`dinov2_vitb14.pth`): `patch_embed`, `cls_token`,
`pos_embed` [1, 1 + M*M, D] (M = 37 for the released 518px models), `register_tokens`,
`blocks_i/{norm1, attn/{qkv, proj}, ls1, norm2, mlp/{fc1, fc2} or {w12, w3}, ls2}`, `norm`;
`reed_jax.convert.dinov2` maps the hub and the transformers namings onto them.

`DinoV2(...)(x)` takes ImageNet-normalised images `[B, H, W, 3]` (H, W multiples of 14) and
returns `x_norm_patchtokens` [B, H/14 * W/14, D] (the final-LayerNorm patch tokens REPA aligns
to), `x_norm_clstoken` [B, D] and `x_prenorm` [B, 1 + R + N, D]. The position embedding is
resampled to the input's grid exactly as the hub does it: bicubic with
`scale_factor = (n + 0.1) / M` for the plain models, `size = n` with antialiasing for the
register models (`interpolate_offset`, `interpolate_antialias`). `preprocess` is REPA's input
path: uint8 / 255, ImageNet mean/std, PyTorch-bicubic resize 256 -> 224.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.convert import dinov2 as convert, weight_file
from reed_jax.convert.dinov2 import SIZES
from reed_jax.models.encoders.resample import resize_bicubic

# SIZES: hidden, depth, heads per released size (patch 14, MLP ratio 4; G uses SwiGLU)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(images_uint8, out_size: int = 224):
    """REPA's DINOv2 input: [B, H, W, 3] uint8 -> x / 255, (x - mean) / std, bicubic to out_size."""
    x = jnp.asarray(images_uint8, jnp.float32) / 255.0
    x = (x - MEAN) / STD
    return resize_bicubic(x, (out_size, out_size))


class Block(nn.Module):
    """With `logits`, returns (x, this block's attention logits [B, heads, N, N])."""
    hidden: int
    heads: int
    mlp_ratio: float = 4.0
    swiglu: bool = False
    eps: float = 1e-6
    logits: bool = False

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        h = nn.LayerNorm(self.eps, name="norm1")(x)
        h = Attention(self.heads, self.logits, name="attn")(h)
        h, logits = h if self.logits else (h, None)
        x = x + h * self.param("ls1", nn.initializers.ones, (d,))
        h = nn.LayerNorm(self.eps, name="norm2")(x)
        h = Mlp(self.mlp_ratio, self.swiglu, name="mlp")(h)
        x = x + h * self.param("ls2", nn.initializers.ones, (d,))
        return (x, logits) if self.logits else x


class Attention(nn.Module):
    """With `logits`, also returns the pre-softmax attention `q k^T / sqrt(head_dim)` [B, heads, N, N]."""
    heads: int
    logits: bool = False

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        qkv = nn.Dense(3 * d, name="qkv")(x).reshape(b, n, 3, self.heads, d // self.heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        out = nn.Dense(d, name="proj")(out.reshape(b, n, d))
        if not self.logits:
            return out
        return out, jnp.einsum("bqhd,bkhd->bhqk", qkv[:, :, 0], qkv[:, :, 1]) / np.sqrt(d // self.heads)


class Mlp(nn.Module):
    ratio: float = 4.0
    swiglu: bool = False

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        hidden = int(d * self.ratio)
        if self.swiglu:  # the hub's SwiGLUFFNFused: width rounded as below, w12 = [gate; up]
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
            gate, up = jnp.split(nn.Dense(2 * hidden, name="w12")(x), 2, axis=-1)
            return nn.Dense(d, name="w3")(nn.silu(gate) * up)
        return nn.Dense(d, name="fc2")(nn.gelu(nn.Dense(hidden, name="fc1")(x), approximate=False))


class DinoV2(nn.Module):
    hidden: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 14
    mlp_ratio: float = 4.0
    swiglu: bool = False
    registers: int = 0
    pos_grid: int = 37
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    attention_layers: tuple[int, ...] = ()  # also return these blocks' (1-based) logits: 'attn_logits' {block: [B, H, N, N]}

    def pos_embedding(self, pos, gh: int, gw: int):
        """[1, 1 + M*M, D] -> [1, 1 + gh*gw, D] as the hub's interpolate_pos_encoding."""
        m = self.pos_grid
        if (gh, gw) == (m, m):
            return pos
        grid = pos[:, 1:].reshape(1, m, m, -1)
        if self.interpolate_offset:
            scale = ((gh + self.interpolate_offset) / m, (gw + self.interpolate_offset) / m)
            grid = resize_bicubic(grid, (gh, gw), scale_factor=scale, antialias=self.interpolate_antialias)
        else:
            grid = resize_bicubic(grid, (gh, gw), antialias=self.interpolate_antialias)
        return jnp.concatenate([pos[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

    @nn.compact
    def __call__(self, x):
        b, h, w, _ = x.shape
        p, d = self.patch, self.hidden
        if h % p or w % p:
            raise ValueError(f"DINOv2 input {h}x{w} is not a multiple of the patch size {p}")
        t = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(x)
        gh, gw = t.shape[1], t.shape[2]
        t = t.reshape(b, gh * gw, d)
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, 1 + self.pos_grid ** 2, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), t], axis=1) + self.pos_embedding(pos, gh, gw)
        if self.registers:
            reg = self.param("register_tokens", nn.initializers.normal(1e-6), (1, self.registers, d))
            x = jnp.concatenate([x[:, :1], jnp.broadcast_to(reg, (b, self.registers, d)), x[:, 1:]], axis=1)
        logits = {}
        for i in range(self.depth):
            x = Block(d, self.heads, self.mlp_ratio, self.swiglu, logits=i + 1 in self.attention_layers,
                      name=f"blocks_{i}")(x)
            if i + 1 in self.attention_layers:
                x, logits[i + 1] = x
        out = nn.LayerNorm(1e-6, name="norm")(x)
        return {"x_norm_clstoken": out[:, 0], "x_norm_patchtokens": out[:, 1 + self.registers:], "x_prenorm": x,
                **({"attn_logits": logits} if logits else {})}


def patch_attention(logits: jax.Array, heads: int, registers: int = 0) -> jax.Array:
    """HASTE's teacher maps from DINOv2 attention logits [B, H, 1 + R + N, 1 + R + N]: the first `heads`
    heads, the CLS (and register) rows and columns removed, softmax over the N patch keys (so each
    row is re-normalised over patches) -> [B, heads, N, N] float32."""
    p = 1 + registers
    return jax.nn.softmax(logits[:, :heads, p:, p:].astype(jnp.float32), axis=-1)


def build(size: str, registers: bool = False, **overrides) -> DinoV2:
    """A released configuration: build('B') is dinov2_vitb14, build('B', registers=True) dinov2_vitb14_reg."""
    hidden, depth, heads = SIZES[size]
    kw = dict(hidden=hidden, depth=depth, heads=heads, swiglu=size == "G", registers=4 if registers else 0,
              interpolate_offset=0.0 if registers else 0.1, interpolate_antialias=registers)
    kw.update(overrides)
    return DinoV2(**kw)


# ----------------------------------------------------------------------------- registry

def _builder(size: str | None, registers: bool):
    """Registry builder for a released DINOv2 (size, registers), or any width when size is None.
    `builder.group(targets, config)` builds one encoder for several targets on the same weights
    (one forward, every output: REPA's tokens and HASTE's maps of several blocks)."""
    def load(target_name: str, target, config):
        key = f"targets.{target_name}.weights"
        sd = weight_file.load(target.weights, key)
        hub = sd if any(k.startswith("blocks.") for k in sd) else convert.transformers_to_hub(sd)
        kw = convert.model_kwargs(hub, config.precompute.dinov2_heads or None)
        if size is not None:
            want = dict(hidden=SIZES[size][0], depth=SIZES[size][1], registers=4 if registers else 0)
            have = {k: kw[k] for k in want}
            if have != want:
                raise ValueError(f"{key}={target.weights!r} holds a DINOv2 with {have}, not "
                                 f"{target.encoder} ({want})")
        if config.precompute.get("dinov2_pos_resample", "reference") == "reference":
            # REPA/REED (load_encoders): timm's resample_abs_pos_embed of the 37x37 grid to the patch grid at
            # load (bicubic, antialias=True, to the size), so the forward never interpolates again
            kw.update(interpolate_offset=0.0, interpolate_antialias=True)
        return kw, convert.from_torch_hub(hub)

    def group(targets: dict, config):
        """One FrozenEncoder for {name: target} on one weight file; apply -> {name: output}: pooled
        targets the CLS token, token targets the patch tokens, attention targets (HASTE) block
        `encoder_layer`'s maps over the patch keys (`patch_attention`), width-checked per target."""
        from reed_jax.models.encoders import FrozenEncoder

        name0, t0 = next(iter(targets.items()))
        kw, params = load(name0, t0, config)
        res = config.precompute.dinov2_size
        n = (res // kw.get("patch", 14)) ** 2
        layers = set()
        for name, t in targets.items():
            if t.get("kind", "features") == "attention":
                layer = int(t.encoder_layer)
                if not 1 <= layer <= kw["depth"] or not 1 <= t.heads <= kw["heads"]:
                    raise ValueError(f"targets.{name}: encoder_layer={layer}, heads={t.heads} but the DINOv2 in "
                                     f"{t.weights!r} has {kw['depth']} blocks of {kw['heads']} heads")
                layers.add(layer)
                width = n  # a map row: the N patch keys
            else:
                width = kw["hidden"]
            if t.dim != width:
                raise ValueError(f"targets.{name}.dim={t.dim} but the {t.encoder} weights in {t.weights!r} have "
                                 f"width {width}")
        model = DinoV2(**kw, attention_layers=tuple(sorted(layers)))

        def apply(p, images):
            out = model.apply({"params": p}, preprocess(images, res))
            res_ = {}
            for name, t in targets.items():
                if t.get("kind", "features") == "attention":
                    res_[name] = patch_attention(out["attn_logits"][int(t.encoder_layer)], t.heads, kw["registers"])
                else:
                    res_[name] = out["x_norm_clstoken" if t.pooled else "x_norm_patchtokens"]
            return res_
        return FrozenEncoder(t0.encoder, apply, params, kw["hidden"])

    def build_encoder(target_name: str, target, config):
        from reed_jax.models.encoders import FrozenEncoder

        enc = group({target_name: target}, config)
        return FrozenEncoder(enc.name, lambda p, images: enc.apply(p, images)[target_name], enc.params, target.dim)
    build_encoder.group = group
    return build_encoder


def _register_all():
    from reed_jax.models.encoders import register

    register("dinov2")(_builder(None, False))  # any width (heads: precompute.dinov2_heads, else the released size's)
    for s in SIZES:
        for reg in (False, True):
            register(f"dinov2_vit{s.lower()}14{'_reg' if reg else ''}")(_builder(s, reg))


_register_all()
