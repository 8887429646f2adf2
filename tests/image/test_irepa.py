"""iREPA's two switches (targets.<name>.projector='conv', spatial_norm=True): the convolutional
projector mixes each token with its grid neighbours exactly as a 3x3 SAME convolution, the spatial
normalisation removes what every token of an image shares, and both reach the train step."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, tiny_config

from reed_jax import config as config_lib, objective, train
from reed_jax.image import track as image_track
from reed_jax.models.projector import ConvProjector


def test_conv_projector_is_a_3x3_same_convolution_on_the_token_grid():
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 5))  # 4x4 tokens of width 5
    proj = ConvProjector(3)
    p = nn.unbox(proj.init(jax.random.PRNGKey(1), h)["params"])
    out = proj.apply({"params": p}, h)
    k, bias = np.asarray(p["conv"]["kernel"]), np.asarray(p["conv"]["bias"])  # [3, 3, 5, 3]
    grid = np.pad(np.asarray(h).reshape(2, 4, 4, 5), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((2, 4, 4, 3))
    for i in range(4):
        for j in range(4):
            want[:, i, j] = np.einsum("bxyc,xyco->bo", grid[:, i:i + 3, j:j + 3], k) + bias
    np.testing.assert_allclose(out, want.reshape(2, 16, 3), atol=1e-5)
    moved = h.at[:, 5].add(1.0)  # token (1, 1): its 3x3 neighbourhood changes, token (3, 3) does not
    diff = np.abs(np.asarray(proj.apply({"params": p}, moved) - out)).sum(-1)[0].reshape(4, 4)
    assert (diff[:3, :3] > 0).all() and diff[3, 3] == 0 and diff[0, 3] == 0
    with pytest.raises(ValueError, match="square token grid; got 15 tokens"):
        proj.apply({"params": p}, h[:, :15])


def test_spatial_normalisation_removes_what_every_token_shares():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 6)) * 3.0 + 1.0
    n = objective.spatial_normalize(x)
    np.testing.assert_allclose(n.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(n.std(1), 1.0, atol=1e-4)
    shared = jax.random.normal(jax.random.PRNGKey(3), (2, 1, 6)) * 10.0  # one offset per image, on every token
    np.testing.assert_allclose(objective.spatial_normalize(x + shared), n, atol=1e-4)
    assert not np.allclose(objective.alignment_loss(x, x + shared), objective.alignment_loss(x, x))


def _batch(c, shared=0.0):
    r = np.random.default_rng(0)
    b = {"image": r.normal(size=(4, 8, 8, 1)).astype(np.float32), "label": np.arange(4, dtype=np.int32),
         "target/digits_tokens": r.normal(size=(4, 16, 64)).astype(np.float32)}
    b["target/digits_tokens"] += shared * r.normal(size=(4, 1, 64)).astype(np.float32)
    return b


def test_irepa_preset_reaches_the_step():
    c = tiny_config("irepa")
    config_lib.validate(c)
    model = train.build_model(c)
    params = train.init_state(c, model, train.make_optimizer(c)).params
    assert params["projectors_digits_tokens"]["conv"]["kernel"].shape == (3, 3, 32, 64)
    assert train.signature(c)["targets"]["digits_tokens"] == [2, False, 64, "conv"]
    rng = jax.random.PRNGKey(4)
    _, align, _ = image_track.losses(c, model, params, _batch(c), rng)
    _, shifted, _ = image_track.losses(c, model, params, _batch(c, shared=50.0), rng)
    # spatial_norm: a per-image offset shared by every target token changes nothing ...
    np.testing.assert_allclose(shifted["digits_tokens"], align["digits_tokens"], atol=1e-4)
    c.targets.digits_tokens.spatial_norm = False
    _, plain, _ = image_track.losses(c, model, params, _batch(c, shared=50.0), rng)
    assert not np.allclose(plain["digits_tokens"], align["digits_tokens"], atol=1e-3)  # ... without it, it does


def test_irepa_switches_are_refused_where_they_cannot_act():
    c = tiny_config("reed")
    c.targets.digits_pooled.projector = "conv"
    with pytest.raises(config_lib.ConfigError, match="targets.digits_pooled: projector='conv', spatial_norm=False act on"):
        config_lib.validate(c)
    c = tiny_config("repa")
    c.targets.digits_tokens.projector = "attention"
    with pytest.raises(config_lib.ConfigError, match=r"targets.digits_tokens.projector='attention' is not one of"):
        config_lib.validate(c)
    c = load_config("protein_demo")
    c.targets.structure.spatial_norm = True
    with pytest.raises(config_lib.ConfigError, match="targets.structure: .* the protein track takes projector='mlp'"):
        config_lib.validate(c)
    assert jnp.isfinite(objective.spatial_normalize(jnp.ones((1, 4, 2)))).all()  # constant tokens: no NaN
