"""The FID Inception-v3 (TF `inception-2015-12-05`, as pytorch-fid ports it) in Flax, NHWC.

This is the network behind every published FID/sFID/IS number (the ADM evaluator runs the TF
graph; pytorch-fid's `FIDInceptionA/C/E` blocks and pooling choices reproduce it). Submodule
names follow torchvision's `Inception3` so `reed_jax.image.convert_inception` is a rename table.

`FIDInception()(images)` takes uint8-valued images `[N, H, W, 3]` (0..255, any size), resizes
them to 299x299 like TF1 `ResizeBilinear` (align_corners=False, no half-pixel centres: source
coordinate = dst * in / out), scales `(x - 128) / 128` as the TF graph does, and returns
    pool_3:  [N, 2048]      the FID / precision-recall features (`pool_3:0`);
    spatial: [N, 2023]      the first 7 channels of Mixed_6d's 1x1 branch (`mixed_6/conv:0`, the
                            graph's BasicConv output: conv, batch norm, ReLU), 17x17x7 flattened in
                            (h, w, c) order, for sFID;
    logits:  [N, 1008]      pool_3 @ W of the softmax layer, without its bias, as the ADM
                            evaluator computes the Inception Score.
Batch norm is in inference mode with the stored statistics (eps 1e-3); there are no training
paths. Weights: a local `pt_inception-2015-12-05-6726825d.pth` converted with
`reed_jax.image.convert_inception.from_torch`; tests use random weights.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SIZE = 299
BN_EPS = 1e-3


def tf1_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] interpolation matrix of TF1 ResizeBilinear (align_corners=False,
    half_pixel_centers=False): src = dst * n_in / n_out, neighbours floor(src) and floor(src)+1
    (clamped), weights linear in the fractional part. Coordinates in float32, as TF computes them."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.arange(n_out, dtype=np.float32) * scale
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - np.floor(src)).astype(np.float64)
    m = np.zeros((n_out, n_in), np.float64)
    m[np.arange(n_out), lo] += 1.0 - frac
    m[np.arange(n_out), hi] += frac
    return m.astype(np.float32)


def resize_tf1(x: jax.Array, size: int = SIZE) -> jax.Array:
    """[N, H, W, C] -> [N, size, size, C] with TF1 bilinear semantics (float32)."""
    _, h, w, _ = x.shape
    if (h, w) == (size, size):
        return x
    mh, mw = jnp.asarray(tf1_bilinear_matrix(h, size)), jnp.asarray(tf1_bilinear_matrix(w, size))
    x = jnp.einsum("oh,nhwc->nowc", mh, x, precision="highest")
    return jnp.einsum("pw,nowc->nopc", mw, x, precision="highest")


class BasicConv(nn.Module):
    """Conv (no bias) -> batch norm (inference, eps 1e-3) -> ReLU."""
    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)),
                    use_bias=False, name="conv")(x)
        bn = BatchNormParams(self.features, name="bn")
        return nn.relu(bn(x))


class BatchNormParams(nn.Module):
    """Inference batch norm with its statistics stored as params (the network is frozen)."""
    features: int

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        return (x - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias


def avg_pool_same(x):
    """3x3 stride-1 average pool, padding 1, padded zeros not counted (TF's avg pool)."""
    window, pad = (1, 3, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), pad)
    n = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0, jax.lax.add, window,
                              (1, 1, 1, 1), pad)
    return s / n


def max_pool(x, size=3, stride=2, pad=0):
    return nn.max_pool(x, (size, size), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x, return_branch1x1: bool = False):
        c = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(avg_pool_same(x))
        out = jnp.concatenate([b1, b7, bd, bp], axis=-1)
        return (out, b1) if return_branch1x1 else out


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """pool='avg' (Mixed_7b, TF avg pool without padded zeros) or 'max' (Mixed_7c: the FID graph
    max-pools here)."""
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = avg_pool_same(x) if self.pool == "avg" else max_pool(x, 3, 1, 1)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInception(nn.Module):
    """See the module docstring. `num_classes` is the softmax width of the graph (1008); `size` the
    resize target (299 is the protocol; anything >= 75 runs, for fast tests)."""
    num_classes: int = 1008
    size: int = SIZE

    @nn.compact
    def __call__(self, images, resize: bool = True):
        x = images.astype(jnp.float32)
        if resize:
            x = resize_tf1(x, self.size)
        x = (x - 128.0) / 128.0
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool(x)
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = max_pool(x)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x, b1 = InceptionC(160, name="Mixed_6d")(x, return_branch1x1=True)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool = x.mean(axis=(1, 2))
        w = self.param("fc_kernel", nn.initializers.lecun_normal(), (pool.shape[-1], self.num_classes))
        logits = jnp.dot(pool, w, precision="highest")
        spatial = b1[..., :7].reshape(b1.shape[0], -1)
        return {"pool_3": pool, "spatial": spatial, "logits": logits}


def init_params(seed: int = 0, size: int = SIZE) -> dict:
    """Random params (tests; real weights come from the converter)."""
    net = FIDInception()
    init = jax.jit(lambda key: net.init(key, jnp.zeros((1, size, size, 3)), resize=False)["params"])
    return init(jax.random.PRNGKey(seed))


@functools.cache
def feature_fn(size: int = SIZE):
    """A jitted (params, uint8 images [N, H, W, 3]) -> {pool_3, spatial, logits}, resized to `size`."""
    net = FIDInception(size=size)
    return jax.jit(lambda params, images: net.apply({"params": params}, images))
