import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax import objective


def test_noise_weights_values():
    t = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(objective.noise_weight("constant", t), [1, 1, 1])
    np.testing.assert_allclose(objective.noise_weight("linear", t), [1, 0.5, 0])
    np.testing.assert_allclose(objective.noise_weight("cosine", t), [1, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose(objective.noise_weight("sigmoid", t), [1 / (1 + np.exp(-5)), 0.5, 1 / (1 + np.exp(5))],
                               rtol=1e-6)
    np.testing.assert_allclose(objective.noise_weight("loglinear", t), [1, 1 - np.log(1.5), 1 - np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(objective.noise_weight("cutoff", t, 0.25, 0.5), [0, 1, 0])
    with pytest.raises(ValueError, match="unknown"):
        objective.noise_weight("exp", t)


def test_alignment_loss_is_negative_cosine_per_sample():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(objective.alignment_loss(jnp.asarray(z) * 7.0, jnp.asarray(z)), [-1, -1], atol=1e-6)
    np.testing.assert_allclose(objective.alignment_loss(-jnp.asarray(z), jnp.asarray(z)), [1, 1], atol=1e-6)
    p = rng.normal(size=(2, 3, 5))
    cos = (p * z).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(z, axis=-1)
    np.testing.assert_allclose(objective.alignment_loss(jnp.asarray(p, jnp.bfloat16), jnp.asarray(z)),
                               -cos.mean(1), atol=1e-2)  # bf16 inputs, float32 math
    assert objective.alignment_loss(jnp.asarray(p, jnp.bfloat16), jnp.asarray(z)).dtype == jnp.float32
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(objective.alignment_loss(jnp.asarray(p), jnp.asarray(z), jnp.asarray(mask)),
                               [-cos[0, :2].mean(), -cos[1, 0]], rtol=1e-5)
    np.testing.assert_allclose(objective.alignment_loss(jnp.asarray(p[:, 0]), jnp.asarray(z[:, 0])), -cos[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        objective.alignment_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_combine_weights_per_sample_and_coeff_zero_switches_off():
    t = jnp.array([0.0, 1.0])
    gen = jnp.array([1.0, 3.0])
    a_loss = jnp.array([-1.0, 0.0])  # sample 0 aligned, sample 1 not
    cfg = {"x": {"coeff": 2.0, "noise_weight": "linear"}}
    loss, m = objective.combine(gen, {"x": a_loss}, t, 0.5, 0.25, cfg)
    # per sample: mean(a * L) = mean([1 * -1, 0 * 0]) = -0.5; the reference's mean(a)*mean(L) = 0.5 * -0.5 = -0.25
    np.testing.assert_allclose(float(m["loss/align"]), 2.0 * -0.5)
    np.testing.assert_allclose(float(loss), 0.5 * 2.0 + 0.25 * -1.0)
    off = {"x": {"coeff": 0.0, "noise_weight": "constant"}}
    loss0, m0 = objective.combine(gen, {"x": jnp.array([jnp.nan, 1.0])}, t, 1.0, 1.0, off)
    np.testing.assert_allclose(float(loss0), 2.0)  # a switched-off target adds nothing, not even NaN
    assert float(m0["loss/align"]) == 0.0
