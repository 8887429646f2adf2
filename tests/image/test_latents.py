"""Latent tokenizers (reed_jax.image.latents): the registry, parity of the f16c32 converters with
torch (a random diffusers AutoencoderKL of REPA-E's E2E-VAE shape; a random LDM AutoencoderKL as
VA-VAE names it), the per-channel normalisation folded into the moments and inverted at decode,
the config keys, and a CPU precompute + decode run on a tiny VA-VAE-shaped tokenizer."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from reed_jax import config as config_lib
from reed_jax.data import pipeline, precompute
from reed_jax.image import (
    config as image_config,
    convert_vae,
    evaluate as image_eval,
    imagenet,
    interpolants,
    latents,
    vae,
)

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def load(name):
    with np.load(os.path.join(FIX, name)) as f:
        return {k: f[k] for k in f.files}, {k[3:]: f[k] for k in f.files if k.startswith("sd/")}


@pytest.fixture(scope="module")
def f16():
    return load("vae_f16c32_parity.npz")


@pytest.fixture(scope="module")
def ldm():
    return load("vavae_ldm_parity.npz")


def parity(tok, f, sd):
    model, params = latents.build(latents.get(tok), sd, groups=2)
    moments = model.apply({"params": params}, jnp.asarray(f["x"]), method=model.encode)
    decoded = model.apply({"params": params}, jnp.asarray(f["z"]), method=model.decode)
    errs = {"mean": float(np.abs(moments[..., :32] - f["mean"]).max()),
            "std": float(np.abs(moments[..., 32:] - f["std"]).max()),
            "decoded": float(np.abs(decoded - f["decoded"]).max())}
    print(tok, "max abs error", errs)
    assert max(errs.values()) <= 1e-4, errs
    return model


def test_repae_f16c32_diffusers_parity(f16):
    f, sd = f16
    model = parity("e2e_vavae_f16c32", f, sd)
    assert model.factor == 16 and model.latent == 32 and tuple(model.attn_levels) == (4,) and model.mid_attention


def test_vavae_ldm_parity_drops_training_keys(ldm):
    f, sd = ldm
    assert convert_vae.is_ldm(sd) and "loss.logvar" in sd and "linear_proj.weight" in sd
    model = parity("va_vae_f16c32", f, sd)
    assert model.factor == 16 and tuple(model.attn_levels) == (4,)


def test_ldm_names_give_the_diffusers_structure(f16, ldm):
    """The LDM and diffusers fixtures are the same architecture (widths 4, 4, 4, 4, 8): their
    converted param trees agree leaf by leaf in name and shape (the decoder's levels reversed)."""
    a = convert_vae.from_diffusers(f16[1])
    b = convert_vae.from_ldm(ldm[1])
    shapes = lambda t: {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    assert shapes(a) == shapes(b)
    assert shapes(b)["['decoder']['up_blocks_0']['resnets_0']['conv1']['kernel']"] == (3, 3, 8, 8)
    assert "['decoder']['up_blocks_0']['attentions_1']['to_q']['kernel']" in shapes(b)  # 2 blocks, each attended


def test_registry_entries():
    assert latents.DEFAULT == "sd_vae_f8c4"
    sd = latents.get("sd_vae_f8c4")
    assert (sd.factor, sd.latent_shape(256), sd.scale, sd.stats) == (8, (32, 32, 4), 0.18215, False)
    for name in ("va_vae_f16c32", "e2e_vavae_f16c32", "e2e_invae_f16c32"):
        t = latents.get(name)
        assert (t.factor, t.latent_shape(256), t.latent_shape(512), t.scale, t.stats) == \
            (16, (16, 16, 32), (32, 32, 32), 1.0, True), name
        assert t.widths == (128, 128, 256, 256, 512) and t.attn_levels == (4,)
    assert latents.get("e2e_sdvae_f8c4").widths == sd.widths and latents.get("e2e_sdvae_f8c4").stats
    with pytest.raises(latents.TokenizerError, match="data.tokenizer='f8' is not a registered"):
        latents.get("f8")
    with pytest.raises(latents.TokenizerError, match="data.image_size=100 is not a multiple"):
        latents.get("va_vae_f16c32").latent_shape(100)


def test_published_architectures():
    # sd_vae_f8c4 is the SD configuration (83.65M parameters) unchanged
    sd = latents.get("sd_vae_f8c4").model()
    assert sd == vae.AutoencoderKL()
    # VA-VAE f16d32: 256x256 -> 16x16x32 moments (64 channels) and back, attention at the 16x16 level
    m = latents.get("va_vae_f16c32").model()
    params = jax.eval_shape(lambda: vae.init_params(m, size=64))
    assert "attentions_1" in params["encoder"]["down_blocks_4"] and "attentions_2" in params["decoder"]["up_blocks_0"]
    assert "attentions_0" not in params["encoder"]["down_blocks_3"]
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    assert jax.eval_shape(lambda p, x: m.apply({"params": p}, x, method=m.encode), params, x).shape == (1, 16, 16, 64)
    z = jax.ShapeDtypeStruct((1, 16, 16, 32), jnp.float32)
    assert jax.eval_shape(lambda p, z: m.apply({"params": p}, z, method=m.decode), params, z).shape == (1, 256, 256, 3)
    n = sum(np.prod(a.shape) for a in jax.tree.leaves(params))
    assert n == 69_836_067, n  # the LDM f16 KL autoencoder (ch 128, ch_mult 1,1,2,2,4; z 32), our count
    no_mid = jax.eval_shape(lambda: vae.init_params(vae.AutoencoderKL(widths=(8, 8), groups=4, mid_attention=False)))
    assert "attentions_0" not in no_mid["encoder"]["mid_block"]


def test_scale_only_normalisation_is_unchanged():
    norm = latents.normalisation(latents.get("sd_vae_f8c4"), "precompute.vae_path", "/nonexistent.safetensors", 0.18215)
    m = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.float32)
    assert norm.normalise_moments(m) is m
    z = m[..., :4]
    np.testing.assert_array_equal(norm.denormalise(z), z / 0.18215)


def test_stats_normalisation_round_trip(ldm):
    f, _ = ldm
    mean, std = f["stats_mean"].reshape(-1), f["stats_std"].reshape(-1)
    norm = latents.Normalisation(1.0, mean, std)
    moments = jnp.concatenate([jnp.asarray(f["mean"]), jnp.asarray(f["std"])], -1)
    stored = norm.normalise_moments(moments)
    key = jax.random.PRNGKey(3)
    x0 = interpolants.x0_from_moments(key, stored, 1.0)
    eps = jax.random.normal(key, f["mean"].shape)
    z = f["mean"] + f["std"] * eps  # the posterior sample the references normalise: (z - mean) / std * 1.0
    np.testing.assert_allclose(x0, (z - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.denormalise(x0), z, rtol=1e-5, atol=1e-5)
    # a latent scale multiplies after the normalisation and is divided out first at decode
    norm2 = latents.Normalisation(0.5, mean, std)
    np.testing.assert_allclose(norm2.denormalise(interpolants.x0_from_moments(key, stored, 0.5)), z, rtol=1e-5,
                               atol=1e-5)


def test_stats_files(tmp_path):
    c = 4
    mean, std = np.arange(c, dtype=np.float32), np.full(c, 2.0, np.float32)
    # REPA-E: latents_bias = BN running mean, latents_scale = rsqrt(running var), [1, C, 1, 1]
    got = latents.read_stats({"latents_bias": mean.reshape(1, c, 1, 1), "latents_scale": (1 / std).reshape(1, c, 1, 1)},
                             "x", c)
    np.testing.assert_allclose(got[0], mean)
    np.testing.assert_allclose(got[1], std)
    got = latents.read_stats({"mean": mean.reshape(1, c, 1, 1), "std": std.reshape(1, c, 1, 1)}, "x", c)
    np.testing.assert_allclose(got[1], std)
    with pytest.raises(latents.TokenizerError, match="3 and 3 values; the tokenizer has 4"):
        latents.read_stats({"mean": mean[:3], "std": std[:3]}, "x", c)
    w = str(tmp_path / "e2e-vavae.safetensors")
    assert latents.stats_candidates(w)[0] == str(tmp_path / "e2e-vavae-latents-stats.pt")
    assert str(tmp_path / "latents_stats.pt") in latents.stats_candidates(w)
    tok = latents.get("va_vae_f16c32")
    with pytest.raises(latents.TokenizerError, match="beside precompute.vae_path="):
        latents.normalisation(tok, "precompute.vae_path", w, 1.0)
    np.savez(tmp_path / "latents_stats.npz", mean=np.ones(32, np.float32), std=np.full(32, 3.0, np.float32))
    norm = latents.normalisation(tok, "precompute.vae_path", w, 1.0)
    np.testing.assert_array_equal(norm.std, np.full(32, 3.0, np.float32))


def test_latent_channels_checked(f16):
    with pytest.raises(latents.TokenizerError, match="32 latent channels; data.tokenizer='sd_vae_f8c4' has 4"):
        latents.build(latents.get("sd_vae_f8c4"), f16[1], groups=2)


def test_config_keys():
    c = image_config.imagenet_config("XL", "reed", tokenizer="va_vae_f16c32")
    assert tuple(c.data.image_shape) == (16, 16, 32) and c.data.latent_scale == 1.0 and c.model.patch_size == 1
    assert c.data.tokenizer == "va_vae_f16c32" and image_config.token_count(c) == 256
    assert c.precompute.vae_path.endswith("/weights/vavae-imagenet256-f16d32-dinov2.pt")
    assert c.eval.vae_decoder_path == c.precompute.vae_path
    config_lib.validate(c, 1)
    c512 = image_config.imagenet_config("XL", "repa", tokenizer="e2e_vavae_f16c32", resolution=512)
    assert tuple(c512.data.image_shape) == (32, 32, 32) and image_config.token_count(c512) == 1024
    sd = image_config.imagenet_config("XL", "reed")
    assert (tuple(sd.data.image_shape), sd.data.latent_scale, sd.model.patch_size, sd.data.tokenizer) == \
        ((32, 32, 4), 0.18215, 2, "sd_vae_f8c4")
    bad = image_config.imagenet_config("XL", "reed", tokenizer="va_vae_f16c32")
    bad.data.image_shape = (16, 16, 4)
    with pytest.raises(config_lib.ConfigError, match=r"data.image_shape=\(16, 16, 4\) has 4 channels; "
                                                     r"data.tokenizer='va_vae_f16c32' gives 32"):
        config_lib.validate(bad, 1)
    bad = image_config.imagenet_config("XL", "reed", tokenizer="va_vae_f16c32")
    bad.data.latent_scale = 0.18215
    with pytest.raises(config_lib.ConfigError, match="data.latent_scale=0.18215 is not data.tokenizer"):
        config_lib.validate(bad, 1)
    bad = image_config.imagenet_config("XL", "reed")
    bad.data.tokenizer = "vavae"
    with pytest.raises(config_lib.ConfigError, match="data.tokenizer"):
        config_lib.validate(bad, 1)
    with pytest.raises(latents.TokenizerError, match="imagenet config: tokenizer='x'"):
        image_config.imagenet_config("XL", "reed", tokenizer="x")


def test_vavae_precompute_and_decode_on_cpu(tmp_path, ldm):
    """Image folder -> tiny LDM-named VA-VAE-shaped tokenizer with per-channel statistics -> shards of
    normalised moments (checked against the tokenizer and the statistics) -> the decoder of evaluation
inverts the normalisation. (Training reads moments the same whatever the tokenizer: the 2-step train
+ sample run of test_imagenet_e2e covers it; here it would add a minute of compiles.)"""
    f, sd = ldm
    rng = np.random.default_rng(0)
    for s in ("n01", "n02"):
        os.makedirs(tmp_path / "train" / s)
        for j in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), np.uint8)).save(tmp_path / "train" / s / f"{j}.png")
    np.savez(tmp_path / "vavae.npz", **sd)
    np.savez(tmp_path / "vavae-latents-stats.npz", latents_bias=f["stats_mean"], latents_scale=1 / f["stats_std"])
    c = image_config.imagenet_config("S", "sit", root=str(tmp_path), tokenizer="va_vae_f16c32")
    c.data.update(imagenet_dir=str(tmp_path / "train"), image_size=32, image_shape=(2, 2, 32), num_classes=2,
                  num_shards=1)
    c.precompute.update(vae_path=str(tmp_path / "vavae.npz"), vae_groups=2, batch_size=4)
    c.eval.vae_decoder_path = ""
    c.model.update(depth=2, hidden=32, heads=2, projector_width=32)
    out = precompute.precompute(c, str(tmp_path), log=lambda *_: None)
    data = pipeline.read_all(out, "train")
    crops = np.stack([imagenet.center_crop_adm(Image.open(tmp_path / "train" / s / f"{j}.png").convert("RGB"), 32)
                      for s in ("n01", "n02") for j in range(2)])
    model, params = latents.build(latents.get("va_vae_f16c32"), sd, groups=2)
    raw = model.apply({"params": params}, jnp.asarray(crops, jnp.float32) / 127.5 - 1, method=model.encode)
    m, s = f["stats_mean"].reshape(-1), f["stats_std"].reshape(-1)
    np.testing.assert_allclose(data["moments"][..., :32], (raw[..., :32] - m) / s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(data["moments"][..., 32:], raw[..., 32:] / s, rtol=1e-4, atol=1e-4)
    decode = image_eval.latent_decoder(c)
    z = jnp.asarray(f["z"])
    want = model.apply({"params": params}, z, method=model.decode)
    np.testing.assert_allclose(decode(np.asarray((z - m) / s)), want, atol=1e-4)
    config_lib.validate(c, 1)  # SiT-S/1 on the 2x2x32 latents (training on moments is tested elsewhere)


def test_tokenizer_configs():
    from conftest import load_config

    c = load_config("imagenet_sit_xl_1_repa_e2e_vavae")
    assert (c.data.tokenizer, tuple(c.data.image_shape), c.model.name, c.train.steps) == \
        ("e2e_vavae_f16c32", (16, 16, 32), "SiT-XL/1", 4_000_000)
    assert (c.sample.cfg_scale, c.sample.guidance_lo, c.sample.guidance_hi) == (2.5, 0.0, 0.75)  # REPA-E: 1.26
    assert load_config("imagenet_sit_xl_1_repa_e2e_vavae", "none").sample.cfg_scale == 1.0  # REPA-E: 1.83
    assert c.targets.dinov2.tap == "block8" and c.curriculum.align.coeff == 0.5
    r = load_config("imagenet_sit_xl_1_reed_vavae")
    assert (r.data.tokenizer, r.data.latent_scale, r.model.patch_size, image_config.token_count(r)) == \
        ("va_vae_f16c32", 1.0, 1, 256)
    for cfg in (c, r):
        config_lib.validate(cfg, 1)
