import jax
import numpy as np
import pytest
from conftest import load_config, trace_reed_step

from reed_jax import config as config_lib, train
from reed_jax.image import config as image_config

IMAGENET = [f"imagenet_sit_{s}_2_{v}" for s in ("b", "l", "xl") for v in ("sit", "repa", "reed")]


def _check_built(c, state, variant):
    assert state.params["y_embedder"]["embedding_table"].shape == (1001, c.model.hidden)
    assert sum(k.startswith("projectors_") for k in state.params) == {"sit": 0, "repa": 1, "reed": 2}[variant]
    for name, t in c.targets.items():  # projector output widths = the targets' (768 DINOv2 tokens, 3584 VLM)
        assert state.params[f"projectors_{name}"]["dense_4"]["kernel"].shape == (2048, t.dim)


@pytest.mark.parametrize("name", [n for n in IMAGENET if "_b_" in n])  # XL: the session's sit_xl_reed
def test_imagenet_configs_build_with_eval_shape(name):
    c = load_config(name)
    config_lib.validate(c, num_devices=8)
    model, tx = train.build_model(c), train.make_optimizer(c)
    _check_built(c, train.abstract_state(c, model, tx), name.rsplit("_", 1)[1])


# The published runs (METHOD.md section 2, PROTOCOLS.md): SiT size table, tap depths (DINOv2 tokens after
# block 8, 4 for SiT-B; the pooled VLM vector after 16, 8 for SiT-B: reed_jax.image.config.IMAGENET_TAPS),
# AdamW 1e-4 (0.9, 0.999, 1e-8, no decay), clip 1.0, EMA 0.9999, batch 256, label dropout 0.1, linear
# path with uniform t, evaluation with 250 SDE steps on 50K samples.
SIZES = {"b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}
TAPS = {"b": (4, 8), "l": (8, 16), "xl": (8, 16)}


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_configs_hold_the_published_values(name):
    _, _, size, _, variant = name.split("_")
    c = load_config(name)
    config_lib.validate(c, num_devices=8)
    m = c.model
    assert (m.depth, m.hidden, m.heads, m.patch_size, m.mlp_ratio, m.label_dropout, m.projector_width) == (
        *SIZES[size], 2, 4.0, 0.1, 2048)
    o = c.optim
    assert (o.lr, o.b1, o.b2, o.eps, o.weight_decay, o.grad_clip, o.ema_decay, o.amsgrad, o.warmup_steps) == (
        1e-4, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.9999, False, 0)
    assert c.train.batch_size == 256
    assert (c.diffusion.path, c.diffusion.time_sampler) == ("linear", "uniform")
    assert (c.sample.method, c.sample.num_steps) == ("sde", 250) and c.eval.fid_samples == 50_000
    assert (c.eval.inception_size, c.eval.frechet_method) == (299, "sqrtm")
    d = c.data
    assert (d.kind, tuple(d.image_shape), d.num_classes, d.latent_scale, d.image_size) == (
        "latents", (32, 32, 4), 1000, 0.18215, 256)
    targets = {n: (t.tap, t.pooled, t.dim, t.coeff) for n, t in c.targets.items()}
    dino, vlm = TAPS[size]
    want = {"sit": {}, "repa": {"dinov2": (f"block{dino}", False, 768, 1.0)},
            "reed": {"dinov2": (f"block{dino}", False, 768, 1.0), "vlm": (f"block{vlm}", True, 3584, 0.5)}}[variant]
    assert targets == want
    g, a = c.curriculum.gen, c.curriculum.align
    assert (g.start, g.decay, a.decay) == (0, "constant", "constant")
    assert g.warmup == (50_000 if variant == "reed" else 0)  # w_gen = min(step / 50K, 1) for REED
    if variant != "sit":
        assert a.coeff == 0.5 and c.targets.dinov2.encoder == "dinov2_vitb14"
    if variant == "reed":
        assert c.targets.vlm.encoder == "external"


def test_imagenet_xl_reed_train_step_traces(sit_xl_reed):
    c, model, tx, state = sit_xl_reed
    _check_built(c, state, "reed")
    metrics = trace_reed_step(c, model, tx, state, latent=32, tokens=256)
    assert metrics["loss/total"].shape == ()
    n = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))
    assert 675e6 < n < 720e6  # SiT-XL/2 (675M) + two projectors


@pytest.mark.parametrize("name,n_targets", [("demo", 2), ("demo_repa", 1), ("demo_sit", 0)])
def test_demo_configs_validate(name, n_targets):
    c = load_config(name)
    config_lib.validate(c)
    assert len(c.targets) == n_targets and c.data.source == "digits"


def test_sit_model_presets_and_errors():
    m = image_config.sit_model("SiT-B/4")
    assert (m.depth, m.hidden, m.heads, m.patch_size) == (12, 768, 12, 4)
    with pytest.raises(config_lib.ConfigError, match="unknown SiT size"):
        image_config.sit_model("XXL/2")
    with pytest.raises(config_lib.ConfigError, match="unknown variant"):
        image_config.imagenet_config("XL", "dit")


@pytest.mark.parametrize("size", ["S", "B", "L", "XL"])
def test_every_sit_size_has_imagenet_reed_taps(size):
    c = image_config.imagenet_config(size, "reed")
    config_lib.validate(c)
    depth = lambda t: int(t.tap.removeprefix("block"))
    assert depth(c.targets.dinov2) < depth(c.targets.vlm) <= c.model.depth


def test_imagenet_config_paths_follow_paths_root_and_name_encoders():
    c = load_config("imagenet_sit_xl_2_reed")
    assert c.data.imagenet_dir == "/data/reed/imagenet/train" and c.targets.dinov2.encoder == "dinov2_vitb14"
    c.paths_root = "/mnt/x"  # what --config.paths_root=/mnt/x does: every derived path moves
    assert c.data.dir == "/mnt/x/shards/imagenet256"
    assert c.precompute.vae_path == "/mnt/x/weights/sd-vae-ft-mse.safetensors"
    assert c.eval.vae_decoder_path == "/mnt/x/weights/sd-vae-ft-ema.safetensors"  # the protocol's decoder
    assert c.targets.dinov2.weights == "/mnt/x/weights/dinov2_vitb14.pth" and c.targets.dinov2.dtype == "bfloat16"
    assert c.targets.vlm.encoder == "external" and c.targets.vlm.source == "/mnt/x/embeddings/qwen2vl7b_l15"
    c.data.dir = "/elsewhere"  # one path overridden alone
    assert c.data.dir == "/elsewhere" and c.data.imagenet_dir == "/mnt/x/imagenet/train"


def test_encoder_registry_names():
    from reed_jax.models import encoders

    names = encoders.names()
    for n in ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitb14_reg", "dinov2_vitl14", "dinov2_vitg14_reg",
              "dinov2", "external", "digits"):
        assert n in names


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.targets.dinov2.update(encoder="clip"), "targets.dinov2.encoder='clip' is not one of"),
    (lambda c: c.targets.vlm.update(source=""), "imported embeddings need encoder='external' and a source"),
    (lambda c: c.targets.dinov2.update(source="/x.npy"), "imported embeddings need encoder='external'"),
    (lambda c: c.targets.dinov2.update(encoder="digits"), "does not fit data.source='imagenet'"),
    (lambda c: c.targets.dinov2.update(dtype="float16"), "targets.dinov2.dtype='float16'"),
    (lambda c: c.encoder.update(mode="lazy"), "encoder.mode='lazy'"),
    (lambda c: c.data.update(image_source="s3"), "data.image_source='s3'"),
    (lambda c: c.data.update(verify_checksums="sometimes"), "data.verify_checksums='sometimes' is not one of"),
])
def test_target_encoder_keys_are_validated(edit, match):
    c = image_config.imagenet_config("B", "reed")
    edit(c)
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(c)


def test_online_mode_needs_an_image_source():
    c = load_config("demo")
    c.encoder.mode = "online"
    with pytest.raises(config_lib.ConfigError, match="encoder.mode='online' .* needs data.source='imagenet'"):
        config_lib.validate(c)


@pytest.mark.parametrize("arg,hidden,n_targets", [("reed", 32, 3), ("base", 32, 0), ("reed,reference", 128, 3)])
def test_protein_demo_configs_validate(arg, hidden, n_targets):
    c = load_config("protein_demo", arg)
    config_lib.validate(c)
    assert c.track == "protein" and c.model.hidden == hidden and len(c.targets) == n_targets
    if n_targets:
        assert {n: (t.tap, t.coeff) for n, t in c.targets.items()} == {
            "structure": ("encoder_nodes", 1.0), "single": ("decoder2_nodes", 0.5), "pair": ("decoder2_edges", 2.0)}
        assert c.curriculum.align.coeff == 0.2 and c.curriculum.align.decay == "cosine"
    assert config_lib.epochs_to_steps(50, num_train=42, batch_size=8) == 300  # ceil(42 / 8) = 6 steps per epoch
