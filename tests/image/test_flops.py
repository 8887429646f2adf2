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


def test_attention_targets_have_no_projector_flops():
    """HASTE's attention targets align the tap block's own logits: only its feature target has a projector."""
    c = image_config.imagenet_config("XL", "haste")
    f = flops.sit_forward_flops(c.model, c.data.image_shape, c.targets)
    d, w = c.model.hidden, c.model.projector_width
    assert f["projectors"] == 2 * 256 * (d * w + w * w + w * 768)  # REPA's one token projector (DINOv2-B, 768)
