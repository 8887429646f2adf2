import numpy as np
import pytest

from reed_jax import curriculum


def test_headline_gen_warmup_and_constant_align():
    w_gen = curriculum.gen_weight(start=0, warmup=50_000)
    assert float(w_gen(0)) == 0.0  # step 0 trains the alignment alone
    np.testing.assert_allclose(float(w_gen(25_000)), 0.5)
    np.testing.assert_allclose(float(w_gen(50_000)), 1.0)
    np.testing.assert_allclose(float(w_gen(900_000)), 1.0)
    w_align = curriculum.align_weight(0.5)
    assert float(w_align(0)) == 0.5 and float(w_align(10**6)) == 0.5


def test_gen_start_then_cosine_decay_is_the_intended_formula():
    w = curriculum.gen_weight(start=10, warmup=10, decay="cosine", total_steps=120)
    assert float(w(9)) == 0.0 and float(w(10)) == 0.0
    np.testing.assert_allclose(float(w(15)), 0.5)
    np.testing.assert_allclose(float(w(20)), 1.0)
    for s in (20, 45, 70, 95, 120):
        np.testing.assert_allclose(float(w(s)), (1 + np.cos(np.pi * (s - 20) / 100)) / 2, atol=1e-6)
    np.testing.assert_allclose(float(w(500)), 0.0, atol=1e-7)


def test_gen_linear_decay_and_no_warmup():
    w = curriculum.gen_weight(start=0, warmup=0, decay="linear", total_steps=100)
    np.testing.assert_allclose([float(w(s)) for s in (0, 50, 100, 150)], [1.0, 0.5, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("decay,mid", [("linear", 0.75), ("cosine", 0.2 * (1 + np.cos(np.pi / 4)) / 2 / 0.2)])
def test_align_decays(decay, mid):
    w = curriculum.align_weight(0.2, decay, 400)
    np.testing.assert_allclose(float(w(0)), 0.2)
    np.testing.assert_allclose(float(w(100)), 0.2 * mid, rtol=1e-6)
    np.testing.assert_allclose(float(w(400)), 0.0, atol=1e-7)
    np.testing.assert_allclose(float(w(1000)), 0.0, atol=1e-7)


def test_jittable_and_bad_values():
    import jax
    w = jax.jit(curriculum.gen_weight(0, 4))
    np.testing.assert_allclose(float(w(2)), 0.5)
    with pytest.raises(ValueError, match="curriculum.align.decay"):
        curriculum.align_weight(1.0, "exp", 10)
    with pytest.raises(ValueError, match="total_steps"):
        curriculum.gen_weight(0, 100, "cosine", 50)


def test_align_stop_step_switches_every_alignment_term_off():
    """HASTE's early stop: w_align as before until `stop_step`, 0 from it on; 0 = never (the default)."""
    import jax

    w = curriculum.align_weight(0.5, "linear", 100, stop_step=40)
    np.testing.assert_allclose([float(w(s)) for s in (0, 39, 40, 99, 500)], [0.5, 0.5 * 0.61, 0.0, 0.0, 0.0],
                               rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(w)(np.int32(39))), 0.5 * 0.61, rtol=1e-6)
    never = curriculum.align_weight(0.5, "constant", 0, stop_step=0)
    assert float(never(10**7)) == 0.5
    with pytest.raises(ValueError, match="stop_step=-1 must be >= 0"):
        curriculum.align_weight(0.5, stop_step=-1)
