import pytest

from reed_jax.image import config as image_config, flops


def test_sit_xl2_forward_matches_published_gflops():
    m = image_config.sit_model("XL/2")
    f = flops.sit_forward_flops(m, (32, 32, 4))
    assert f["backbone"] == pytest.approx(237e9, rel=0.01)  # 118.6 GMACs (DiT/SiT papers)
    c = image_config.imagenet_config("XL", "reed")
    with_proj = flops.train_flops_per_image(c.model, (32, 32, 4), c.targets)
    # projectors add ~1.8% (PROTOCOLS.md): the token projector runs on 256 tokens
    assert 1.01 < with_proj / (3 * f["backbone"]) < 1.03


def test_peak_table():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops("TPU v5 lite") == 197e12
    assert flops.peak_flops("cpu") is None
