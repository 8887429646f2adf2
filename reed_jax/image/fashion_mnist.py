"""Fashion-MNIST for the image benchmark with a real pretrained target encoder (issue 20).

Data: Zalando's Fashion-MNIST (70,000 grey 28x28 product photos, 10 classes: T-shirt, trouser,
pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot), as Debian's `dataset-fashion-mnist`
installs it (`apt-get install dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist/*.gz, the
original IDX files). Nothing is downloaded at run time; a missing file is an error that says how
to install it.

Targets: the frozen ImageNet EfficientNet-Lite0 (reed_jax/models/encoders/efficientnet.py) on the
28x28 image resized to `size` (default 112): spatial stages as token targets on the generator's
token grid (`efficientnet.tokens_on_grid`) and the pooled head (1280) as the pooled target.

Metric network (never the target encoder): `FDNet`, a small CNN trained here from scratch on all
70,000 images (train + test) to classify them; its penultimate features give the Frechet distance
(`fashion-FD`) and its classifier the sample accuracy of class-conditional samples.
"""
from __future__ import annotations

import gzip
import os

import flax.linen as nn
import jax
import numpy as np

DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


class DataError(FileNotFoundError):
    pass


def _idx(path: str) -> np.ndarray:
    """An IDX file (big-endian magic 0x0000 08 <ndim>, dims, uint8 data) -> uint8 array."""
    raw = gzip.open(path).read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an uint8 IDX file")
    nd = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * nd)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: {data.size} bytes of data for dims {dims}")
    return data.reshape(dims)


def load_uint8(split: str = "all", root: str = DIR) -> tuple[np.ndarray, np.ndarray]:
    """-> (images uint8 [N, 28, 28, 1], labels int32 [N]); split 'train' (60,000), 'test' (10,000)
    or 'all' (70,000, train first)."""
    if split == "all":
        a, b = load_uint8("train", root), load_uint8("test", root)
        return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split {split!r} is not one of {('all',) + tuple(FILES)}")
    paths = [os.path.join(root, f) for f in FILES[split]]
    for p in paths:
        if not os.path.exists(p):
            raise DataError(f"{p} does not exist: install Debian's dataset-fashion-mnist "
                            f"(`apt-get install dataset-fashion-mnist`)")
    images, labels = (_idx(p) for p in paths)
    if images.shape[1:] != IMAGE_SHAPE[:2] or len(images) != len(labels):
        raise DataError(f"{paths[0]}: images {images.shape} do not match labels {labels.shape}")
    return images[..., None], labels.astype(np.int32)


def to_model(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28, 1] -> float32 in [-1, 1] (the generator's and the FD network's input)."""
    return images_u8.astype(np.float32) / 127.5 - 1.0


def subset(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int = 0):
    """A class-balanced random subset of `per_class` images per class (sorted indices)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                  for c in range(NUM_CLASSES)]))
    return images[idx], labels[idx]


def effnet_targets(params, images_u8: np.ndarray, stages: tuple[str, ...], grid: int, size: int = 112,
                   batch_size: int = 100, log=print) -> dict[str, np.ndarray]:
    """EfficientNet-Lite0 targets of uint8 images [N, 28, 28, 1]: '<stage>' -> [N, grid*grid, C]
    token targets for each spatial stage, 'pooled' -> [N, 1280]."""
    from reed_jax.models.encoders import efficientnet as E

    model = E.EfficientNetLite()

    @jax.jit
    def fn(x):
        out = model.apply({"params": params}, E.preprocess(x, size))
        return {**{s: E.tokens_on_grid(out[s], grid) for s in stages}, "pooled": out["pooled"]}

    outs = []
    for i in range(0, len(images_u8), batch_size):
        outs.append(jax.device_get(fn(images_u8[i:i + batch_size])))
        if (i // batch_size) % 20 == 0:
            log(f"  EfficientNet targets {i + len(outs[-1]['pooled'])}/{len(images_u8)}")
    return {k: np.concatenate([o[k] for o in outs]).astype(np.float32) for k in outs[0]}


class FDNet(nn.Module):
    """The metric network: a small CNN classifier (28x28x1 in [-1, 1]); 'features' [B, 128] for the
    Frechet distance, 'logits' [B, 10] for the sample accuracy."""
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(32, (3, 3))(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(h))   # 14x14
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(h))   # 7x7
        h = h.reshape(h.shape[0], -1)
        feats = nn.relu(nn.Dense(self.feature_dim)(h))
        return {"features": feats, "logits": nn.Dense(NUM_CLASSES)(feats)}


class Scorer:
    """fashion-FD (Frechet distance in FDNet features against the whole data set) and sample accuracy."""

    def __init__(self, params, real_images: np.ndarray):
        """params: trained FDNet params; real_images [N, 28, 28, 1] in [-1, 1] (the reference set)."""
        from reed_jax.image import frechet
        from reed_jax.models.encoders import classifier

        self.net, self.params = FDNet(), params
        self._predict, self._frechet = classifier.predict, frechet
        self.real_stats = frechet.statistics(classifier.predict(self.net, params, real_images)["features"])

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """images [N, 28, 28, 1] (clipped to [-1, 1]), labels [N] -> {'fashion_fd', 'accuracy'}."""
        out = self._predict(self.net, self.params, np.clip(images, -1.0, 1.0))
        fd = self._frechet.frechet_distance(*self._frechet.statistics(out["features"]), *self.real_stats)
        return {"fashion_fd": fd, "accuracy": float((out["logits"].argmax(-1) == labels).mean())}
