"""Fashion-MNIST source of the EfficientNet benchmark: IDX reading, splits, errors, targets, scorer.

Runs on tiny IDX files written here (Debian's dataset-fashion-mnist need not be installed)."""
import gzip

import jax
import numpy as np
import pytest

from reed_jax.image import fashion_mnist as F


def _write_idx(path, array: np.ndarray):
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    for split, n, first in (("train", 6, 0), ("test", 4, 6)):
        images = rng.integers(0, 256, (n, 28, 28))
        images[:, 0, 0] = np.arange(first, first + n)  # the image's index in 'all', in pixel (0, 0)
        _write_idx(tmp_path / F.FILES[split][0], images)
        _write_idx(tmp_path / F.FILES[split][1], np.arange(first, first + n) % 2)
    return str(tmp_path)


def test_load_splits_in_order(root):
    x, y = F.load_uint8("all", root)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(10))  # train first, then test, row order kept
    np.testing.assert_array_equal(y, np.arange(10) % 2)
    assert F.load_uint8("test", root)[0].shape == (4, 28, 28, 1)
    with pytest.raises(ValueError, match="split 'val'"):
        F.load_uint8("val", root)


def test_missing_and_malformed_files_are_named(root, tmp_path):
    with pytest.raises(F.DataError,
                       match=r"t10k-images-idx3-ubyte.gz does not exist: .*apt-get install dataset-fashion-mnist"):
        F.load_uint8("test", str(tmp_path / "nowhere"))
    with gzip.open(tmp_path / F.FILES["test"][0], "wb") as fh:
        fh.write(b"\x00\x00\x0d\x03" + b"\x00" * 12)  # float IDX
    with pytest.raises(F.DataError, match="not an uint8 IDX file"):
        F.load_uint8("test", root)
    with gzip.open(tmp_path / F.FILES["test"][0], "wb") as fh:  # header: 4 images; bytes: 3
        fh.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (4, 28, 28)) + bytes(3 * 784))
    with pytest.raises(F.DataError, match=r"2352 bytes of data for dims \[4, 28, 28\]"):
        F.load_uint8("test", root)
    _write_idx(tmp_path / F.FILES["test"][0], np.zeros((3, 28, 28)))  # 3 images, 4 labels
    with pytest.raises(F.DataError, match=r"do not match labels"):
        F.load_uint8("test", root)


def test_subset_is_class_balanced_and_model_range():
    labels = np.repeat(np.arange(10), 7)
    images = np.arange(70, dtype=np.uint8).reshape(70, 1, 1, 1)
    x, y = F.subset(images, labels, 3)
    assert np.bincount(y).tolist() == [3] * 10 and (labels[x[:, 0, 0, 0]] == y).all()
    np.testing.assert_allclose(F.to_model(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def test_effnet_targets_plumbing(monkeypatch):
    """Each stage's map goes to the generator's grid (tokens_on_grid), the pooled head passes through,
    batches are concatenated in order; the network is stubbed (its parity is tests/image/test_efficientnet.py)."""
    import flax.linen as nn

    from reed_jax.models.encoders import efficientnet as E

    class Stub(nn.Module):
        @nn.compact
        def __call__(self, x):  # x: [B, 32, 32, 3] preprocessed
            b = x.shape[0]
            s3 = jax.numpy.broadcast_to(x[:, ::4, ::4, :1], (b, 8, 8, 80))
            return {"stage3": s3, "stage5": s3[:, ::2, ::2, :1].repeat(192, -1),
                    "pooled": x.mean((1, 2, 3))[:, None].repeat(1280, 1)}

    monkeypatch.setattr(E, "EfficientNetLite", Stub)
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)
    out = F.effnet_targets({}, x, ("stage3", "stage5"), grid=4, size=32, batch_size=2, log=lambda *_: None)
    assert {k: v.shape for k, v in out.items()} == {"stage3": (5, 16, 80), "stage5": (5, 16, 192), "pooled": (5, 1280)}
    pre = np.asarray(E.preprocess(x, 32))
    np.testing.assert_allclose(out["stage3"], np.asarray(E.tokens_on_grid(Stub().apply({}, pre)["stage3"], 4)), atol=1e-5)
    np.testing.assert_allclose(out["pooled"][:, 0], pre.mean((1, 2, 3)), atol=1e-5)


def test_scorer_distance_zero_on_the_reference_set():
    x = F.to_model(np.random.default_rng(1).integers(0, 256, (100, 28, 28, 1)).astype(np.uint8))
    params = F.FDNet().init(jax.random.PRNGKey(0), x[:1])["params"]
    scorer = F.Scorer(params, x)
    same, other = scorer(x, np.zeros(100, np.int32)), scorer(np.clip(x + 0.5, -1, 1), np.zeros(100, np.int32))
    assert same["fashion_fd"] < 1e-3 < other["fashion_fd"]
    from reed_jax.models.encoders import classifier
    logits = classifier.predict(F.FDNet(), params, x)["logits"]
    assert same["accuracy"] == pytest.approx(float((logits.argmax(-1) == 0).mean()))
