"""Image-folder precompute: ADM crop, SD-VAE moments and DINOv2 tokens into shards, resumable
(tiny random VAE / DINOv2 weights from the parity fixtures)."""
import os

import jax.numpy as jnp
import numpy as np
import pytest
from fixture_weights import write_tiny_image_weights
from PIL import Image

from reed_jax import config as config_lib
from reed_jax.convert import dinov2 as convert_dinov2, weight_file
from reed_jax.data import pipeline, precompute, records
from reed_jax.image import (
    config as image_config,
    evaluate as image_eval,
    imagenet,
    precompute as precompute_images,
    sources as image_sources,
    track as image_track,
)
from reed_jax.models.encoders import dinov2

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def test_adm_center_crop():
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (1100, 700, 3), np.uint8))  # W 700, H 1100
    out = imagenet.center_crop_adm(big, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    # by hand: 700x1100 -> box-halved once (short side 700 >= 512) to 350x550 -> bicubic to 256x402 -> crop rows 73..
    half = big.resize((350, 550), resample=Image.BOX).resize((256, 402), resample=Image.BICUBIC)
    np.testing.assert_array_equal(out, np.asarray(half)[73:73 + 256])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(1)
    for s, sizes in (("n01", [(40, 50), (64, 64)]), ("n02", [(90, 33)]), ("n03", [(32, 32), (70, 45), (36, 80)])):
        os.makedirs(d / "train" / s)
        for j, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(d / "train" / s / f"img_{j}.png")
    write_tiny_image_weights(d)
    return d


def folder_config(d):
    c = image_config.imagenet_config("S", "repa")
    c.data.update(dir="", imagenet_dir=str(d / "train"), image_size=32, image_shape=(16, 16, 4), num_classes=3,
                  num_shards=2)
    c.targets.dinov2.update(dim=16, encoder="dinov2", weights=str(d / "dinov2.npz"), dtype="float32")
    c.precompute.update(vae_path=str(d / "vae.npz"), vae_groups=8, dinov2_heads=2, dinov2_size=28, batch_size=4)
    c.eval.vae_decoder_path = ""  # decode with the encoding VAE
    return c


def test_folder_to_shards_matches_direct_encoders_and_resumes(folder, tmp_path):
    c = folder_config(folder)
    c.data.num_shards = 3
    logs = []
    out = precompute.precompute(c, str(tmp_path), logs.append)
    data = pipeline.read_all(out, "train")
    paths, labels, synsets = imagenet.list_folder(str(folder / "train"))
    assert synsets == ["n01", "n02", "n03"] and list(data["label"]) == [0, 0, 1, 2, 2, 2]
    assert list(data["index"]) == list(range(6))
    assert data["moments"].shape == (6, 16, 16, 8) and data["target/dinov2"].shape == (6, 4, 16)
    # the records are the encoders applied to ADM crops
    imgs = np.stack([imagenet.load(p, 32) for p in paths])
    model, params = precompute_images.build_vae(c.precompute.vae_path, 8)
    moments = model.apply({"params": params}, jnp.asarray(imgs, jnp.float32) / 127.5 - 1, method=model.encode)
    np.testing.assert_allclose(data["moments"], moments, atol=1e-5)
    hub = convert_dinov2.transformers_to_hub(dict(np.load(c.targets.dinov2.weights)))
    kw = convert_dinov2.model_kwargs(hub, 2)
    # REPA/REED resample the 37x37 position embedding to the patch grid at load with timm's
    # resample_abs_pos_embed (bicubic, antialias=True, to the size): precompute.dinov2_pos_resample='reference'
    ref = dinov2.DinoV2(**dict(kw, interpolate_offset=0.0, interpolate_antialias=True))
    params = convert_dinov2.from_torch_hub(hub)
    tokens = ref.apply({"params": params}, dinov2.preprocess(imgs, 28))["x_norm_patchtokens"]
    np.testing.assert_allclose(data["target/dinov2"], tokens, atol=1e-5)
    hub_tokens = dinov2.DinoV2(**kw).apply({"params": params}, dinov2.preprocess(imgs, 28))["x_norm_patchtokens"]
    assert np.abs(np.asarray(hub_tokens) - np.asarray(tokens)).max() > 1e-3  # the hub's forward path differs
    assert np.all(data["moments"][..., 4:] > 0)  # std half
    # interrupted: shard 1 lost (a killed writer's .tmp left behind), shard 2 half-written at its final
    # name (a copy cut short) -> the rerun keeps shard 0 and recomputes exactly 1 and 2, same bytes
    _, manifest = records.read_manifest(out)
    os.remove(os.path.join(out, manifest["shards"][1]["file"]))
    with open(os.path.join(out, manifest["shards"][1]["file"] + ".tmp"), "wb") as fh:
        fh.write(b"partial")
    half = os.path.join(out, manifest["shards"][2]["file"])
    with open(half, "r+b") as fh:
        fh.truncate(os.path.getsize(half) // 2)
    logs.clear()
    precompute.precompute(c, str(tmp_path), logs.append)
    assert [m for m in logs if "already complete" in m] == ["shard 0 of 3 already complete, kept"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # a complete shard corrupted since (record count still readable) is recomputed, never re-blessed
    first = os.path.join(out, manifest["shards"][0]["file"])
    with open(first, "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 1]))
    logs.clear()
    precompute.precompute(c, str(tmp_path), logs.append)
    assert "shard 0 of 3 is incomplete or differs from manifest.json: recomputing it" in logs
    assert [m for m in logs if "already complete" in m] == ["shard 1 of 3 already complete, kept",
                                                            "shard 2 of 3 already complete, kept"]
    assert any("6 images x" in m and "GB of shards" in m for m in logs)  # the storage estimate, printed first
    _, manifest2 = records.read_manifest(out)
    assert manifest2["shards"] == manifest["shards"]


def test_bad_inputs_are_named(folder, tmp_path):
    c = folder_config(folder)
    c.precompute.vae_path = str(folder / "missing.safetensors")
    with pytest.raises(weight_file.WeightsError, match="precompute.vae_path=.*missing.safetensors"):
        precompute.precompute(c, str(tmp_path))
    c = folder_config(folder)
    c.data.num_classes = 1000
    with pytest.raises(records.DataError, match="num_classes=1000 but the folder source has 3 classes"):
        precompute.precompute(c, str(tmp_path))
    c = folder_config(folder)
    c.targets.dinov2.dim = 768
    with pytest.raises(ValueError, match="targets.dinov2.dim=768 but the dinov2 weights .* have width 16"):
        precompute.precompute(c, str(tmp_path))
    c = folder_config(folder)
    c.targets.dinov2.encoder = "dinov2_vitb14"  # a registry name promises the released architecture
    with pytest.raises(ValueError, match=r"targets.dinov2.weights=.*dinov2.npz' holds a DINOv2 with .*'hidden': 16"):
        precompute.precompute(c, str(tmp_path))
    c = folder_config(folder)
    c.data.image_shape = (32, 32, 4)
    with pytest.raises(records.DataError, match=r"expects moments of shape \(32, 32, 8\)"):
        precompute.precompute(c, str(tmp_path))


def test_latent_decoder_for_evaluation(folder):

    c = folder_config(folder)
    f = np.load(os.path.join(FIX, "vae_parity.npz"))
    out = image_eval.latent_decoder(c)(jnp.asarray(f["z"]) * c.data.latent_scale)  # shards hold scaled latents
    np.testing.assert_allclose(out, f["decoded"], atol=1e-4)  # the diffusers decoder output of z


def test_imported_embeddings_in_every_layout(folder, tmp_path):
    paths, _, _ = imagenet.list_folder(str(folder / "train"))
    relpaths = image_sources.FolderSource(str(folder / "train"), 32).relpaths
    emb = np.random.default_rng(2).normal(size=(len(paths), 5)).astype(np.float32)
    per_image = tmp_path / "per_image"
    for p, e in zip(paths, emb):
        f = per_image / os.path.relpath(os.path.splitext(p)[0] + ".npy", folder / "train")
        os.makedirs(f.parent, exist_ok=True)
        np.save(f, e)
    np.save(tmp_path / "all.npy", emb)
    perm = np.random.default_rng(3).permutation(len(paths))
    np.savez(tmp_path / "indexed.npz", embeddings=emb[perm], index=perm)
    c = folder_config(folder)
    c.targets.vlm = config_lib.target_template()
    c.targets.vlm.update(tap="block8", pooled=True, dim=5, coeff=0.5, encoder="external", source=str(per_image))
    data = pipeline.read_all(precompute.precompute(c, str(tmp_path / "w")), "train")
    np.testing.assert_array_equal(data["target/vlm"], emb)  # end to end into the shards
    for src in (tmp_path / "all.npy", tmp_path / "indexed.npz"):  # the other layouts, same vectors
        c.targets.vlm.source = str(src)
        get = precompute_images.external_embeddings("vlm", c.targets.vlm, len(paths), relpaths)
        np.testing.assert_array_equal(np.stack([get(i) for i in range(len(paths))]), emb)
    c = folder_config(folder)
    c.targets.vlm = config_lib.target_template()
    c.targets.vlm.update(pooled=True, dim=6, encoder="external", source=str(tmp_path / "all.npy"))
    with pytest.raises(records.DataError, match="width 5; targets.vlm.dim=6"):
        precompute.precompute(c, str(tmp_path / "bad"))
    np.savez(tmp_path / "dup.npz", embeddings=emb, index=np.r_[perm[:-1], perm[0]])
    c.targets.vlm.update(dim=5, source=str(tmp_path / "dup.npz"))
    with pytest.raises(records.DataError, match="exactly once"):
        precompute.precompute(c, str(tmp_path / "bad"))
    np.save(tmp_path / "short.npy", emb[:-1])
    c.targets.vlm.source = str(tmp_path / "short.npy")
    with pytest.raises(records.DataError, match=r"expected \[6 images"):
        precompute.precompute(c, str(tmp_path / "bad"))
    os.remove(per_image / "n02" / "img_0.npy")
    c.targets.vlm.source = str(per_image)
    with pytest.raises(records.DataError, match="1 of 6 images have no embedding file"):
        precompute.precompute(c, str(tmp_path / "bad"))


def test_online_encoder_mode_stores_crops_and_gives_the_precomputed_loss(folder, tmp_path):
    """encoder.mode='online': shards hold the crops, the step runs DINOv2 on them; same loss as from
    the stored tokens."""
    import jax

    from reed_jax import train

    c = folder_config(folder)
    c.model.update(depth=2, hidden=32, heads=2, projector_width=32, patch_size=8)  # 2x2 tokens, as DINOv2 at 28
    c.targets.dinov2.tap = "block1"
    on = folder_config(folder)
    on.model, on.targets = c.model, c.targets
    on.encoder.mode = "online"
    stored = pipeline.read_all(precompute.precompute(c, str(tmp_path / "pre")), "train")
    crops = pipeline.read_all(precompute.precompute(on, str(tmp_path / "on")), "train")
    assert "target/dinov2" not in crops and crops["pixels"].shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(crops["moments"], stored["moments"])
    paths, _, _ = imagenet.list_folder(str(folder / "train"))
    np.testing.assert_array_equal(crops["pixels"], np.stack([imagenet.load(p, 32) for p in paths]))
    train.check_data(on, str(tmp_path / "on" / "data"))
    with pytest.raises(records.DataError, match="field 'pixels'"):
        train.check_data(on, str(tmp_path / "pre" / "data"))  # stored tokens but no crops
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    copy = lambda: jax.tree.map(jnp.copy, state)  # the step donates its input state
    take = lambda data, keys: {k: data[k][:4] for k in keys}
    _, m_pre = train.make_train_step(c, model, tx)(copy(), take(stored, ["moments", "label", "target/dinov2"]))
    frozen = image_track.frozen_encoders(on)
    _, m_on = train.make_train_step(on, model, tx, frozen=frozen)(copy(), take(crops, ["moments", "label", "pixels"]))
    assert float(m_on["loss/align_dinov2"]) == pytest.approx(float(m_pre["loss/align_dinov2"]), abs=1e-5)
    assert float(m_on["loss/total"]) == pytest.approx(float(m_pre["loss/total"]), abs=1e-5)
