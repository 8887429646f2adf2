"""FID Inception: parity with pytorch-fid's network (random weights) and TF1 bilinear resizing."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_weights import random_state_dict

from reed_jax.image import inception
from reed_jax.image.convert_inception import ConversionError, from_torch

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "inception_parity.npz")


def fixture_state_dict():
    f = np.load(FIXTURE)
    keys = [str(k) for k in f["keys"]]
    shapes = [tuple(s[:n]) for s, n in zip(f["shapes"], f["ndims"])]
    sd = random_state_dict(keys, shapes, int(f["seed"]))
    sd.update({k[len("stat:"):]: f[k] for k in f.files if k.startswith("stat:")})
    return f, sd


def test_matches_pytorch_fid_inception():
    f, sd = fixture_state_dict()
    params = from_torch(sd)
    out = jax.jit(lambda p, x: inception.FIDInception().apply({"params": p}, x, resize=False))(params, f["images"])
    for name in ("pool_3", "spatial", "logits"):
        ref = f[name]
        np.testing.assert_allclose(np.asarray(out[name]), ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=1e-4,
                                   err_msg=name)
    assert float(np.abs(f["pool_3"]).mean()) > 0.1  # calibrated BN: the comparison is not of zeros


def test_converter_is_strict():
    _, sd = fixture_state_dict()
    with pytest.raises(ConversionError, match="not converted"):
        from_torch({**sd, "AuxLogits.fc.weight": np.zeros((3, 3))})
    missing = {k: v for k, v in sd.items() if k != "Mixed_6d.branch1x1.bn.running_var"}
    with pytest.raises(ConversionError, match="Mixed_6d.branch1x1.bn.running_var"):
        from_torch(missing)


def test_resize_is_tf1_bilinear():
    import tensorflow as tf

    x = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3)).astype(np.float32)
    ref = tf.compat.v1.image.resize_bilinear(x, (299, 299), align_corners=False, half_pixel_centers=False).numpy()
    ours = np.asarray(inception.resize_tf1(jnp.asarray(x)))
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    # jax.image.resize (half-pixel centres) is measurably different: the explicit matrix matters
    assert float(np.abs(np.asarray(jax.image.resize(x, (2, 299, 299, 3), "bilinear")) - ref).max()) > 1.0


def test_full_size_shapes():
    params = jax.eval_shape(lambda: inception.init_params(0))
    out = jax.eval_shape(inception.feature_fn(), params, jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.uint8))
    assert out["pool_3"].shape == (1, 2048)
    assert out["spatial"].shape == (1, 17 * 17 * 7)
    assert out["logits"].shape == (1, 1008)
