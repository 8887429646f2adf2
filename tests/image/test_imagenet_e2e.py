"""The ImageNet path end to end on tfds mock data for `imagenet2012`: precompute with a tiny random
SD-VAE and DINOv2 (bf16 tokens) plus imported VLM vectors -> train a few steps -> sample and decode."""
import os

import numpy as np
import pytest
from fixture_weights import write_tiny_image_weights
from PIL import Image

from reed_jax import modes, train
from reed_jax.data import pipeline, precompute
from reed_jax.image import config as image_config, evaluate as image_eval, imagenet, precompute as precompute_images

N = 10


def tiny_config(d):
    c = image_config.imagenet_config("S", "reed", root=str(d))
    vae, dino = write_tiny_image_weights(d)
    c.data.update(image_source="tfds", image_size=32, image_shape=(16, 16, 4), num_shards=2)  # 1000 classes kept
    c.model.update(depth=2, hidden=32, heads=2, projector_width=32, patch_size=8)  # 2x2 tokens, as DINOv2 at 28
    c.targets.dinov2.update(tap="block1", dim=16, encoder="dinov2", weights=dino)  # dtype bfloat16 as published
    c.targets.vlm.update(tap="block2", dim=5, source=str(d / "vlm.npy"))
    c.precompute.update(vae_path=vae, vae_groups=8, dinov2_heads=2, dinov2_size=28, batch_size=4)
    c.eval.vae_decoder_path = vae
    c.train.update(batch_size=4, steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    c.sample.update(num_steps=2, batch_size=4, grid_classes=2, grid_per_class=2)
    c.curriculum.gen.warmup = 1
    return c


def test_tfds_mock_precompute_train_sample(tmp_path):
    import jax.numpy as jnp
    import tensorflow_datasets as tfds

    c = tiny_config(tmp_path)
    vlm = np.random.default_rng(0).normal(size=(N, 5)).astype(np.float32)
    np.save(tmp_path / "vlm.npy", vlm)
    logs = []
    with tfds.testing.mock_data(num_examples=N):
        out = precompute.precompute(c, str(tmp_path), logs.append)
        ds = tfds.data_source("imagenet2012", split="train")
        raw = [ds[i] for i in range(N)]
    assert out == str(tmp_path / "shards" / "imagenet256")  # paths derive from paths_root
    data = pipeline.read_all(out, "train")
    assert list(data["index"]) == list(range(N))
    np.testing.assert_array_equal(data["label"], [int(r["label"]) for r in raw])
    crops = np.stack([imagenet.center_crop_adm(Image.fromarray(r["image"]), 32) for r in raw])
    model, params = precompute_images.build_vae(c.precompute.vae_path, 8)
    moments = model.apply({"params": params}, jnp.asarray(crops, jnp.float32) / 127.5 - 1, method=model.encode)
    np.testing.assert_allclose(data["moments"], moments, atol=1e-5)
    tokens = data["target/dinov2"]
    assert tokens.dtype.name == "bfloat16" and tokens.shape == (N, 4, 16)
    from reed_jax.models import encoders
    enc = encoders.build("dinov2", c.targets.dinov2, c)
    np.testing.assert_allclose(tokens.astype(np.float32), enc.apply(enc.params, crops), rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(data["target/vlm"], vlm)
    assert any("bfloat16" in m and "GB of shards" in m for m in logs)

    res = train.train_and_evaluate(c, str(tmp_path / "run"), log=lambda *_: None)
    assert os.path.exists(res["grid"])
    png = modes.sample_mode(c, str(tmp_path / "run"), log=lambda *_: None)
    with np.load(png.replace(".png", ".npz")) as f:
        assert f["arr_0"].shape == (4, 32, 32, 3) and f["arr_0"].dtype == np.uint8  # decoded by the VAE
        assert f["latents"].shape == (4, 16, 16, 4) and list(f["labels"]) == [0, 0, 999, 999]
        decoded = image_eval.latent_decoder(c)(f["latents"])
        np.testing.assert_array_equal(f["arr_0"], np.clip(255 * ((decoded + 1) / 2), 0, 255).astype(np.uint8))


def test_unprepared_tfds_names_the_keys(tmp_path):
    c = tiny_config(tmp_path)
    c.data.tfds_dir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"not prepared as array_record under data.tfds_dir=.*data.tfds_manual_dir"):
        precompute.precompute(c, str(tmp_path))
    c.data.tfds_manual_dir = str(tmp_path / "no_tarballs")
    with pytest.raises(ValueError, match="data.tfds_manual_dir=.*no_tarballs' does not exist"):
        precompute.precompute(c, str(tmp_path))
