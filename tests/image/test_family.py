"""HASTE's attention alignment and REG's entangled class token (issue 21): the attention logits are
the ones the block attends with, the teacher maps are row-stochastic over patch keys, the loss is
HASTE's cross-entropy, REG's class token is denoised with the data (its velocity loss weighted as
configured) and generated jointly at sampling, and the configs refuse what cannot run."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from reed_jax import config as config_lib, objective, train
from reed_jax.image import evaluate as image_eval, samplers, sit as sit_lib, track as image_track
from reed_jax.models.encoders import dinov2

# ----------------------------------------------------------------------------- HASTE


def test_attention_logits_are_the_ones_the_block_attends_with():
    """softmax(logits) @ v through the output projection reproduces the fused attention's output, so
    the aligned logits are the block's own q k^T / sqrt(d) (not transposed, not another scale)."""
    att = sit_lib.Attention(hidden=16, heads=4, logit_heads=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 16))
    p = nn.unbox(att.init(jax.random.PRNGKey(1), x)["params"])
    out, logits = att.apply({"params": p}, x)
    assert logits.shape == (2, 4, 9, 9)
    qkv = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(2, 9, 3, 4, 4)
    v = qkv[:, :, 2]
    mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v).reshape(2, 9, 16)
    np.testing.assert_allclose(mixed @ p["proj"]["kernel"] + p["proj"]["bias"], out, atol=1e-5)
    two = sit_lib.Attention(hidden=16, heads=4, logit_heads=2).apply({"params": p}, x)[1]
    np.testing.assert_allclose(two, logits[:, :2], atol=1e-6)
    # the same for DINOv2's teacher logits
    att = dinov2.Attention(heads=4, logits=True)
    p = att.init(jax.random.PRNGKey(2), x)["params"]
    out, logits = att.apply({"params": p}, x)
    v = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(2, 9, 3, 4, 4)[:, :, 2]
    mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v).reshape(2, 9, 16)
    np.testing.assert_allclose(mixed @ p["proj"]["kernel"] + p["proj"]["bias"], out, atol=1e-5)


def test_attention_loss_is_the_cross_entropy_of_the_rows():
    r = np.random.default_rng(0)
    logits = r.normal(size=(2, 3, 5, 5)).astype(np.float32)
    teacher = np.asarray(jax.nn.softmax(r.normal(size=(2, 3, 5, 5)) * 2, -1), np.float32)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -(teacher * logp).sum(-1).mean((1, 2))
    np.testing.assert_allclose(objective.attention_loss(logits, teacher), want, rtol=1e-5)
    # one map for every head broadcasts; the loss is lowest when the student's rows are the teacher's
    one = teacher[:, :1]
    np.testing.assert_allclose(objective.attention_loss(logits, one), -(one * logp).sum(-1).mean((1, 2)), rtol=1e-5)
    assert (objective.attention_loss(np.log(teacher), teacher) < objective.attention_loss(logits, teacher)).all()
    with pytest.raises(ValueError, match="must be"):
        objective.attention_loss(logits, teacher[:, :, :4])


def test_affinity_teacher_is_row_stochastic_and_peaks_on_similar_tokens():
    tokens = jnp.asarray([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]])
    a = objective.affinity(tokens)
    assert a.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-6)
    assert a[0, 0, 0, 1] > 0.4 and a[0, 0, 0, 2] < 1e-3  # cos 0.99 vs 0: temperature 0.1


def test_dinov2_teacher_maps_drop_cls_and_renormalise_over_patches():
    model = dinov2.DinoV2(hidden=32, depth=2, heads=4, pos_grid=4, attention_layers=(1, 2))
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 56, 56, 3))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    out = model.apply({"params": params}, x)
    logits = out["attn_logits"][2]
    assert logits.shape == (1, 4, 17, 17) and sorted(out["attn_logits"]) == [1, 2]  # CLS + 16 patches
    maps = dinov2.patch_attention(logits, heads=3)
    assert maps.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    full = jax.nn.softmax(logits[:, :3, 1:], -1)[..., 1:]  # the patch rows' weights on patch keys, renormalised
    np.testing.assert_allclose(maps, full / full.sum(-1, keepdims=True), atol=1e-5)
    plain = dinov2.DinoV2(hidden=32, depth=2, heads=4, pos_grid=4).apply({"params": params}, x)
    np.testing.assert_allclose(plain["x_norm_patchtokens"], out["x_norm_patchtokens"], atol=1e-6)


def haste_config(scan=False):
    c = tiny_config("haste")
    for n in ("digits_attn1", "digits_attn2"):
        c.targets[n].heads = 2
    c.model.scan = scan
    config_lib.validate(c)
    return c


def _batch(n=4):
    r = np.random.default_rng(0)
    return {"image": r.normal(size=(n, 8, 8, 1)).astype(np.float32), "label": np.arange(n, dtype=np.int32),
            "target/digits_tokens": r.normal(size=(n, 16, 64)).astype(np.float32),
            "target/digits_pooled": r.normal(size=(n, 128)).astype(np.float32)}


def test_haste_preset_aligns_attention_and_stops_with_the_other_terms():
    c = haste_config()
    assert c.curriculum.align.stop_step == 500  # half of the preset's 1,000 steps
    model = train.build_model(c)
    params = train.init_state(c, model, train.make_optimizer(c)).params
    assert "projectors_digits_attn1" not in params  # attention targets have no projector
    rng = jax.random.PRNGKey(3)
    gen, align, t = image_track.losses(c, model, params, _batch(), rng)
    xt = None  # the same draws as losses(): recompute the student's logits at block 1 and the teacher map
    _, k_t, k_eps, k_drop = jax.random.split(rng, 4)
    x0 = jnp.asarray(_batch()["image"])
    tt = jax.random.uniform(k_t, (4,))
    xt = (1 - tt)[:, None, None, None] * x0 + tt[:, None, None, None] * jax.random.normal(k_eps, x0.shape)
    _, feats = model.apply({"params": params}, xt, tt, jnp.arange(4), train=True, rngs={"label_dropout": k_drop})
    assert feats["digits_attn1"].shape == (4, 2, 16, 16)
    want = objective.attention_loss(feats["digits_attn1"], objective.affinity(_batch()["target/digits_tokens"]))
    np.testing.assert_allclose(align["digits_attn1"], want, rtol=1e-5)
    assert train.signature(c)["targets"]["digits_attn2"] == [2, False, 16, "attention", 2]
    # scan: an aligned block is a run of its own (here block 2, between the taps 0 and 3), the maps the same
    cs, cp = haste_config(scan=True), haste_config()
    for cfg in (cs, cp):
        del cfg.targets["digits_attn1"]
        cfg.targets.digits_tokens.tap = "block3"
    ms, mp = train.build_model(cs), train.build_model(cp)
    assert sit_lib.block_segments(3, ms.targets) == [(0, 1), (1, 2), (2, 3)]
    pp = train.init_state(cp, mp, train.make_optimizer(cp)).params
    ps = sit_lib.stack_blocks(pp, sit_lib.block_segments(3, ms.targets))
    _, fs = ms.apply({"params": ps}, xt, tt, jnp.arange(4))
    _, fp = mp.apply({"params": pp}, xt, tt, jnp.arange(4))
    np.testing.assert_allclose(fs["digits_attn2"], fp["digits_attn2"], atol=1e-4)


def test_attention_target_config_errors_name_the_key():
    c = haste_config()
    c.targets.digits_attn1.heads = 3
    with pytest.raises(config_lib.ConfigError, match=r"targets.digits_attn1: kind='attention' needs .*heads=3"):
        config_lib.validate(c)
    c = haste_config()
    c.targets.digits_attn1.affinity_of = "digits_attn2"
    with pytest.raises(config_lib.ConfigError, match="digits_attn1.affinity_of='digits_attn2' must name a token"):
        config_lib.validate(c)
    c = tiny_config("repa")
    c.targets.digits_tokens.entangle = 0.03
    with pytest.raises(config_lib.ConfigError, match="digits_tokens.entangle=0.03: REG's class token is a pooled"):
        config_lib.validate(c)


def test_dinov2_attention_maps_are_stored_only_when_asked_with_the_cost_first():
    from reed_jax import targets
    from reed_jax.image import config as image_config

    c = image_config.imagenet_config("B", "repa", root="/nonexistent")
    c.targets.dinov2_attn = targets.make(tap="block3", kind="attention", heads=12, dim=256, encoder="dinov2_vitb14",
                                         encoder_layer=9, weights="/nonexistent/w.pth", dtype="bfloat16")
    with pytest.raises(config_lib.ConfigError, match=r"1.50 MiB per image .* 2.0 TB .* encoder.mode='online'"):
        image_config.validate(c, 1)
    c.precompute.store_attention = True
    image_config.validate(c, 1)
    c.precompute.store_attention = False
    c.encoder.mode = "online"
    image_config.validate(c, 1)
    assert image_config.target_shapes(c)["dinov2_attn"] == (12, 256, 256)

# ----------------------------------------------------------------------------- REG


def reg_config():
    c = tiny_config("reg")
    config_lib.validate(c)
    return c


def test_reg_class_token_is_an_input_token_and_its_velocity_is_learned():
    c = reg_config()
    model = train.build_model(c)
    params = train.init_state(c, model, train.make_optimizer(c)).params
    assert params["cls_embedder"]["kernel"].shape == (128, 32)
    assert params["final_layer"]["linear_cls"]["kernel"].shape == (32, 128)
    x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.full((2,), 0.5), jnp.arange(2)
    with pytest.raises(ValueError, match=r"noisy class token cls \[2, 128\]"):
        model.apply({"params": params}, x, t, y)
    # a trained-looking model (non-zero adaLN and outputs): the class token changes the patch velocity
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.PRNGKey(7), a.shape), params)
    (v1, c1), feats = model.apply({"params": params}, x, t, y, cls=jnp.zeros((2, 128)))
    (v2, c2), _ = model.apply({"params": params}, x, t, y, cls=jnp.ones((2, 128)))
    assert v1.shape == (2, 8, 8, 1) and c1.shape == (2, 128) and feats["digits_pooled"].shape == (2, 128)
    assert float(jnp.abs(v1 - v2).max()) > 1e-4 and float(jnp.abs(c1 - c2).max()) > 1e-4

    # in training the model sees the class token noised with the sample's t and its own noise
    batch, rng = _batch(), jax.random.PRNGKey(5)
    parts, _, t = image_track.losses(c, model, params, batch, rng)
    assert set(parts) == {"gen", "cls"}
    gen = parts["gen"] + parts["cls"]
    _, k_t, k_eps, k_drop = jax.random.split(rng, 4)
    x0 = jnp.asarray(batch["image"])
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * jax.random.normal(k_eps, x0.shape)
    c0 = jnp.asarray(batch["target/digits_pooled"])
    eps_c = jax.random.normal(jax.random.fold_in(rng, 5), c0.shape)

    def gen_with(cls):
        (v, vc), _ = model.apply({"params": params}, xt, t, jnp.asarray(batch["label"]), train=True, cls=cls,
                                 rngs={"label_dropout": k_drop})
        return (objective.mse_per_sample(v, eps_like_v(x0, k_eps) - x0)
                + 0.03 * objective.mse_per_sample(vc, eps_c - c0))
    np.testing.assert_allclose(gen, gen_with((1 - t)[:, None] * c0 + t[:, None] * eps_c), rtol=1e-5)
    assert float(jnp.abs(gen - gen_with(c0)).max()) > 1e-4  # not the clean vector (1e-5 agreement above)

    # the generative loss is the image MSE + entangle x the class token's velocity MSE (target eps - c0)
    batch, rng = _batch(), jax.random.PRNGKey(5)
    params0 = train.init_state(c, model, train.make_optimizer(c)).params  # linear_cls = 0: predicted velocity 0
    gen, align, t = image_track.losses(c, model, params0, batch, rng)
    c.targets.digits_pooled.entangle = 0.5
    gen2, _, _ = image_track.losses(c, train.build_model(c), params0, batch, rng)
    c0 = batch["target/digits_pooled"]
    eps = jax.random.normal(jax.random.fold_in(rng, 5), c0.shape)
    mse_cls = np.mean((np.asarray(eps) - c0) ** 2, axis=1)
    np.testing.assert_allclose(gen["cls"], 0.03 * mse_cls, rtol=1e-4)
    np.testing.assert_allclose(gen2["cls"], 0.5 * mse_cls, rtol=1e-4)
    np.testing.assert_allclose(gen2["gen"], gen["gen"], rtol=1e-6)  # the image's term does not depend on the weight
    # the step minimises the sum and logs the parts apart: loss/gen the image's MSE alone, loss/cls the rest
    targets = {n: dict(s) for n, s in c.targets.items()}
    total, m = objective.combine(gen2, align, t, 1.0, 0.0, targets)
    assert float(m["loss/gen"]) == pytest.approx(float(np.mean(gen2["gen"])), rel=1e-6)
    assert float(m["loss/cls"]) == pytest.approx(float(np.mean(0.5 * mse_cls)), rel=1e-4)
    assert float(total) == pytest.approx(float(m["loss/gen"] + m["loss/cls"]), rel=1e-6)
    assert train.signature(c)["targets"]["digits_pooled"] == [3, True, 128, "entangled"]  # (tiny_config: tap block3)


def eps_like_v(x0, key):
    return jax.random.normal(key, x0.shape)


def test_samplers_integrate_a_pytree_state_like_its_leaves():
    """(image, class token) with independent velocities: each ODE leaf equals its own single-array
    run; the SDE gives every leaf noise; CFG mixes every leaf."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 1))
    cls = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    y = jnp.arange(3)
    f = lambda a, t, y: -a * (1.0 + y[:, None, None, None]) * t[:, None, None, None]
    g = lambda a, t, y: 0.5 * a + y[:, None]
    both = lambda s, t, y: (f(s[0], t, y), g(s[1], t, y))
    for method in ("euler", "heun"):
        out = samplers.ode(both, (x, cls), y, 4, method)
        np.testing.assert_allclose(out[0], samplers.ode(f, x, y, 4, method), atol=1e-6)
        np.testing.assert_allclose(out[1], samplers.ode(g, cls, y, 4, method), atol=1e-6)
    gd = samplers.guided(both, 2.0, 9)
    out = samplers.ode(gd, (x, cls), y, 4, "euler")
    np.testing.assert_allclose(out[1], samplers.ode(samplers.guided(g, 2.0, 9), cls, y, 4, "euler"), atol=1e-5)
    s1 = samplers.sde(both, (x, cls), y, 4, jax.random.PRNGKey(2))
    s2 = samplers.sde(both, (x, cls), y, 4, jax.random.PRNGKey(3))
    assert s1[1].shape == (3, 5)
    assert not np.allclose(s1[0], s2[0]) and not np.allclose(s1[1], s2[1])  # every leaf gets noise
    one = samplers.sde(f, x, y, 4, jax.random.PRNGKey(2))  # a single array: the draws of before
    np.testing.assert_allclose(one, samplers.sde(f, x, y, 4, jax.random.PRNGKey(2)))


def test_reg_sampling_generates_the_class_token_jointly():
    c = reg_config()
    c.sample.update(method="sde", num_steps=4, cfg_scale=1.5)
    model = train.build_model(c)
    params = train.init_state(c, model, train.make_optimizer(c)).params
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.PRNGKey(7), a.shape), params)
    fn = image_eval.make_sample_fn(c, model)
    out = fn(params, jax.random.PRNGKey(0), jnp.arange(4))
    assert out.shape == (4, 8, 8, 1) and bool(jnp.isfinite(out).all())
    # the same draws integrated by hand: the model sees the current class-token state at every step
    k_x, k_s = jax.random.split(jax.random.PRNGKey(0))
    x1 = (jax.random.normal(k_x, (4, 8, 8, 1)), jax.random.normal(jax.random.fold_in(k_x, 1), (4, 128)))

    def joint(feed):
        f = lambda s, t, y: model.apply({"params": params}, s[0], t, y, with_projectors=False, cls=feed(s[1]))[0]
        v = samplers.guided(f, 1.5, c.data.num_classes)
        return samplers.sample(v, x1, jnp.arange(4), method="sde", num_steps=4, rng=k_s)[0]
    np.testing.assert_allclose(out, joint(lambda cls: cls), atol=1e-5)
    assert float(jnp.abs(joint(jnp.zeros_like) - out).max()) > 1e-4


def test_imagenet_reg_and_haste_presets_trace_at_xl():
    """The published SiT-XL/2 settings: REG's class token and HASTE's 4 attention pairs (12 of 16
    heads, 256 x 256 maps) go through the model and the losses (traced, no memory)."""
    from conftest import load_config

    from reed_jax.image import config as image_config

    b = 2
    for name in ("imagenet_sit_xl_2_reg", "imagenet_sit_xl_2_haste"):
        c = load_config(name)
        image_config.validate(c, 1)
        model = train.build_model(c)
        shapes = image_config.target_shapes(c)
        batch = {"moments": jax.ShapeDtypeStruct((b, 32, 32, 8), jnp.float32),
                 "label": jax.ShapeDtypeStruct((b,), jnp.int32),
                 **{f"target/{k}": jax.ShapeDtypeStruct((b,) + v, jnp.float32) for k, v in shapes.items()}}
        params = jax.eval_shape(lambda: image_track.init_params(c, model, jax.random.PRNGKey(0)))
        gen, align, _ = jax.eval_shape(lambda p, x: image_track.losses(c, model, p, x, jax.random.PRNGKey(1)),
                                       params, batch)
        gen = gen["gen"] if isinstance(gen, dict) else gen
        assert gen.shape == (b,) and all(v.shape == (b,) for v in align.values())
        if name.endswith("reg"):
            assert params["cls_embedder"]["kernel"].shape == (768, 1152) and set(align) == {"dinov2", "dinov2_cls"}
            assert c.targets.dinov2.coeff == pytest.approx(256 / 257) and c.sample.cfg_scale == 2.3
        else:
            assert shapes["dinov2_attn5"] == (12, 256, 256) and c.targets.dinov2_attn8.encoder_layer == 12
            assert set(align) == {"dinov2", "dinov2_attn5", "dinov2_attn6", "dinov2_attn7", "dinov2_attn8"}
            assert c.curriculum.align.stop_step == 250_000 and c.encoder.mode == "online"


def test_dinov2_attention_target_online_matches_stored(tmp_path):
    """A DINOv2 attention target stored by the precompute (precompute.store_attention) and the same
    target computed inside the step (encoder.mode='online') give the same HASTE loss."""
    import os

    from fixture_weights import write_tiny_image_weights
    from PIL import Image

    from reed_jax import targets
    from reed_jax.data import pipeline, precompute

    d = tmp_path / "imagenet"
    rng = np.random.default_rng(1)
    for s, n in (("n01", 2), ("n02", 2)):
        os.makedirs(d / "train" / s)
        for j in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), np.uint8)).save(d / "train" / s / f"img_{j}.png")
    write_tiny_image_weights(d)

    def cfg(mode):
        from reed_jax.image import config as image_config

        c = image_config.imagenet_config("S", "repa")
        c.data.update(dir="", imagenet_dir=str(d / "train"), image_size=32, image_shape=(16, 16, 4), num_classes=2,
                      num_shards=1)
        c.model.update(depth=2, hidden=32, heads=2, projector_width=32, patch_size=8)  # 2x2 tokens, as DINOv2 at 28
        c.targets.dinov2.update(tap="block1", dim=16, encoder="dinov2", weights=str(d / "dinov2.npz"), dtype="float32")
        c.targets.attn = targets.make(tap="block2", kind="attention", heads=2, dim=4, coeff=0.5, encoder="dinov2",
                                      encoder_layer=1, weights=str(d / "dinov2.npz"))
        c.precompute.update(vae_path=str(d / "vae.npz"), vae_groups=8, dinov2_heads=2, dinov2_size=28, batch_size=4,
                            store_attention=True)
        c.eval.vae_decoder_path = ""
        c.encoder.mode = mode
        config_lib.validate(c)
        return c

    pre, on = cfg("precomputed"), cfg("online")
    stored = pipeline.read_all(precompute.precompute(pre, str(tmp_path / "pre")), "train")
    crops = pipeline.read_all(precompute.precompute(on, str(tmp_path / "on")), "train")
    assert stored["target/attn"].shape == (4, 2, 4, 4) and "target/attn" not in crops
    np.testing.assert_allclose(stored["target/attn"].sum(-1), 1.0, atol=1e-5)
    model, tx = train.build_model(pre), train.make_optimizer(pre)
    state = train.init_state(pre, model, tx)
    copy = lambda: jax.tree.map(jnp.copy, state)  # the step donates its input state
    _, m_pre = train.make_train_step(pre, model, tx)(copy(), {k: stored[k] for k in
                                                            ("moments", "label", "target/dinov2", "target/attn")})
    frozen = image_track.frozen_encoders(on)
    assert [sorted(k.split("+")) for k in frozen] == [["attn", "dinov2"]]  # one DINOv2 forward for both targets
    _, m_on = train.make_train_step(on, model, tx, frozen=frozen)(
        copy(), {k: crops[k] for k in ("moments", "label", "pixels")})
    assert float(m_pre["loss/align_attn"]) > 0
    assert float(m_on["loss/align_attn"]) == pytest.approx(float(m_pre["loss/align_attn"]), abs=1e-5)
