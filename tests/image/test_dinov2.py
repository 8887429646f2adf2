"""DINOv2 parity with transformers (plain, SwiGLU, registers) on REPA's preprocessing, and the
torch-hub position-embedding resample, from tests/fixtures/dinov2_parity.npz."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.convert import dinov2 as convert
from reed_jax.models.encoders import dinov2, resample

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "dinov2_parity.npz")


@pytest.fixture(scope="module")
def fx():
    return np.load(FIXTURE)


def state_dict(fx, name):
    prefix = f"{name}/sd/"
    return {k[len(prefix):]: fx[k] for k in fx.files if k.startswith(prefix)}


def test_preprocess_matches_torch_bicubic(fx):
    ours = np.asarray(dinov2.preprocess(fx["image"]))
    np.testing.assert_allclose(ours[:, :40], fx["preprocessed_top"], atol=1e-5)
    # jax.image.resize (Keys a = -0.5, other edges) is not the same resize
    x = (jnp.asarray(fx["image"], jnp.float32) / 255 - dinov2.MEAN) / dinov2.STD
    other = np.asarray(jax.image.resize(x, (1, 224, 224, 3), "bicubic"))[:, :40]
    assert np.abs(other - fx["preprocessed_top"]).max() > 1e-2


@pytest.mark.parametrize("name", ["plain", "swiglu", "registers"])
def test_transformers_parity(fx, name):
    hub = convert.transformers_to_hub(state_dict(fx, name))
    kw = convert.model_kwargs(hub, heads=2)
    kw["interpolate_offset"] = 0.0  # transformers resamples to a size (the hub plain models use +0.1)
    assert kw["swiglu"] == (name == "swiglu") and kw["registers"] == (4 if name == "registers" else 0)
    assert kw["interpolate_antialias"] == (name == "registers") and kw["pos_grid"] == 37
    model = dinov2.DinoV2(**kw)
    params = convert.from_torch_hub(hub)
    out = model.apply({"params": params}, dinov2.preprocess(fx["image"]))
    ref = fx[f"{name}/last_hidden_state"]  # [1, 1 + R + 256, 16], final LayerNorm applied
    r = kw["registers"]
    np.testing.assert_allclose(out["x_norm_patchtokens"], ref[:, 1 + r:], atol=1e-4)
    np.testing.assert_allclose(out["x_norm_clstoken"], ref[:, 0], atol=1e-4)
    assert out["x_norm_patchtokens"].shape == (1, 256, 16)


def test_hub_position_resample_uses_the_scale_factor(fx):
    pos = state_dict(fx, "plain")["embeddings.position_embeddings"]
    model = dinov2.DinoV2(hidden=16, depth=0, heads=2, pos_grid=37, interpolate_offset=0.1)
    got = np.asarray(model.pos_embedding(jnp.asarray(pos), 16, 16))[:, 1:].reshape(1, 16, 16, 16)
    np.testing.assert_allclose(got, fx["hub_pos_resampled"], atol=1e-5)
    by_size = resample.resize_bicubic(jnp.asarray(pos[:, 1:].reshape(1, 37, 37, 16)), (16, 16))
    assert np.abs(np.asarray(by_size) - fx["hub_pos_resampled"]).max() > 1e-3  # the +0.1 matters


def test_released_naming_and_strictness(fx):
    sd = state_dict(fx, "plain")
    released = {}
    for k, v in sd.items():  # the naming of the released safetensors (facebook/dinov2-*)
        k = k.replace("attention.q_proj", "attention.attention.query").replace("attention.k_proj", "attention.attention.key")
        k = k.replace("attention.v_proj", "attention.attention.value").replace("attention.o_proj", "attention.output.dense")
        released[k] = v
    a, b = convert.from_transformers(sd), convert.from_transformers(released)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    hub = convert.transformers_to_hub(sd)
    with pytest.raises(convert.ConversionError, match="not converted"):
        convert.from_torch_hub({**hub, "head.weight": np.zeros(3)})
    with pytest.raises(convert.ConversionError, match="incomplete qkv"):
        convert.transformers_to_hub({k: v for k, v in sd.items() if "layer.1.attention.k_proj" not in k})
    with pytest.raises(convert.ConversionError, match="hidden size 16"):
        convert.model_kwargs(hub)


def test_released_sizes_shapes():
    for size, registers in (("S", False), ("B", True), ("G", False)):
        m = dinov2.build(size, registers)
        x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
        params = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
        out = jax.eval_shape(m.apply, params, x)
        assert out["x_norm_patchtokens"].shape == (1, 256, dinov2.SIZES[size][0])
    n = sum(np.prod(a.shape) for a in jax.tree.leaves(jax.eval_shape(
        lambda: dinov2.build("B").init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))))
    assert 86e6 < n < 87.5e6  # ViT-B/14: 86.6M parameters (with the 37x37 position table)
