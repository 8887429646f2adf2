"""SD-VAE (AutoencoderKL) parity with diffusers on a tiny random configuration."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.image import convert_vae as convert, vae

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "vae_parity.npz")
TINY = dict(widths=(16, 32), layers=1, groups=8)


@pytest.fixture(scope="module")
def fx():
    f = np.load(FIXTURE)
    return f, {k[3:]: f[k] for k in f.files if k.startswith("sd/")}


def test_encoder_moments_and_decoder_match_diffusers(fx):
    f, sd = fx
    model = vae.AutoencoderKL(**TINY)
    params = convert.from_diffusers(sd, expected=jax.eval_shape(lambda: vae.init_params(model)))
    moments = model.apply({"params": params}, jnp.asarray(f["x"]), method=model.encode)
    np.testing.assert_allclose(moments[..., :4], f["mean"], atol=1e-4)
    np.testing.assert_allclose(moments[..., 4:], f["std"], atol=1e-4)
    out = model.apply({"params": params}, jnp.asarray(f["z"]), method=model.decode)
    np.testing.assert_allclose(out, f["decoded"], atol=1e-4)


def test_old_attention_names_and_shape_errors(fx):
    _, sd = fx
    old = {}
    for k, v in sd.items():  # older exports: query/key/value/proj_attn, attention weights as 1x1 convs
        for new, was in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".{new}." in k:
                k = k.replace(f".{new}.", f".{was}.")
                v = v[:, :, None, None] if v.ndim == 2 else v
        old[k] = v
    a, b = convert.from_diffusers(sd), convert.from_diffusers(old)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    sd_model = jax.eval_shape(lambda: vae.init_params(vae.AutoencoderKL(), size=64))  # the SD widths
    with pytest.raises(convert.ConversionError, match="shape"):
        convert.from_diffusers(sd, expected=sd_model)
    with pytest.raises(convert.ConversionError, match="not part of"):
        convert.from_diffusers({**sd, "encoder.extra.weight": np.zeros((2, 2, 1, 1))},
                               expected=jax.eval_shape(lambda: vae.init_params(vae.AutoencoderKL(**TINY))))


def test_sd_configuration_shapes():
    model = vae.AutoencoderKL()
    params = jax.eval_shape(lambda: vae.init_params(model, size=64))
    n = sum(np.prod(a.shape) for a in jax.tree.leaves(params))
    assert 83.0e6 < n < 84.0e6  # sd-vae-ft-mse: 83.65M parameters
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    assert jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method=model.encode), params, x).shape == (1, 32, 32, 8)
    z = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32)
    decode = lambda p, z: model.apply({"params": p}, z, method=model.decode)
    assert jax.eval_shape(decode, params, z).shape == (1, 256, 256, 3)
