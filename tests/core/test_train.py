import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from reed_jax import checkpoint, config as config_lib, modes, targets as targets_lib, train
from reed_jax.data import pipeline, records
from reed_jax.image import track as image_track


def test_tiny_overfit_loss_drops(digits_shards):
    c = tiny_config("reed")
    c.curriculum.gen.warmup = 0
    c.optim.lr = 2e-3
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    step = train.make_train_step(c, model, tx)
    batch = next(iter(pipeline.make_loader(digits_shards, "train", 16, seed=0)))
    batch = {k: v for k, v in batch.items() if k != "index"}
    gen, align = [], []
    for _ in range(150):
        state, m = step(state, batch)
        gen.append(float(m["loss/gen"]))
        align.append(float(m["loss/align_digits_tokens"]))
    assert np.mean(gen[-10:]) < 0.6 * np.mean(gen[:10])
    assert np.mean(align[-10:]) < np.mean(align[:10]) - 0.3  # -cos falls: the projector aligns
    assert int(state.step) == 150
    assert set(m) >= {"loss/total", "loss/gen", "loss/align", "loss/align_digits_pooled", "weight/gen",
                      "weight/align", "grad_norm", "learning_rate"}


def test_ema_and_curriculum_in_the_step(digits_shards):
    c = tiny_config("reed")
    c.curriculum.gen.warmup = 4
    c.optim.ema_decay = 0.5
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    p0 = jax.tree.map(np.asarray, state.params)  # the step donates its input state
    batch = {k: v for k, v in next(iter(pipeline.make_loader(digits_shards, "train", 16, seed=0))).items() if k != "index"}
    state, m = train.make_train_step(c, model, tx)(state, batch)
    assert float(m["weight/gen"]) == 0.0 and float(m["weight/align"]) == 0.5  # step 0: alignment alone
    # with w_gen = 0 the generative head gets no gradient
    np.testing.assert_array_equal(state.params["final_layer"]["linear"]["kernel"], 0.0)
    leaf = lambda s: s["projectors_digits_tokens"]["dense_0"]["kernel"]
    np.testing.assert_allclose(leaf(state.ema_params), 0.5 * leaf(p0) + 0.5 * leaf(state.params), rtol=1e-6, atol=1e-7)


def run(c, wd):
    return train.train_and_evaluate(c, str(wd), log=lambda *_: None)


def run_logged(c, wd, log):
    return train.train_and_evaluate(c, str(wd), log=log)


def restore_params(c, wd):
    model, tx = train.build_model(c), train.make_optimizer(c)
    mngr = checkpoint.manager(str(wd))
    state, meta = checkpoint.restore(mngr, train.abstract_state(c, model, tx))
    return state, meta, mngr.all_steps()


def test_train_eval_outputs_and_bitwise_resume(digits_shards, tmp_path):
    c = tiny_config("reed")
    c.data.dir = digits_shards
    result = run(c, tmp_path / "straight")
    assert result["step"] == 6 and os.path.exists(result["grid"])
    assert np.isfinite(result["digits_fd"]) and 0.0 <= result["accuracy"] <= 1.0
    saved = json.load(open(tmp_path / "straight" / "results.json"))
    assert saved["final"]["digits_fd"] == result["digits_fd"]
    # every track's periodic evaluations land in <workdir>/eval/<name>_<step>.json
    assert sorted(os.listdir(tmp_path / "straight" / "eval")) == ["eval_0000006.json"]
    assert json.load(open(tmp_path / "straight" / "eval" / "eval_0000006.json")) == saved["final"]
    assert os.listdir(tmp_path / "straight" / "tensorboard")
    s_straight, _, steps = restore_params(c, tmp_path / "straight")
    assert steps == [3, 6]

    def preempt(msg):  # SIGTERM arrives while the run starts up (as a TPU preemption would)
        if msg.startswith("model "):
            os.kill(os.getpid(), signal.SIGTERM)

    assert run_logged(c, tmp_path / "resumed", preempt) == {}  # saves after the step in flight, exits
    _, _, steps = restore_params(c, tmp_path / "resumed")
    assert steps == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    run(c, tmp_path / "resumed")  # relaunch: resumes at 1, continues with the very next batch
    s_resumed, meta, _ = restore_params(c, tmp_path / "resumed")
    assert int(s_resumed.step) == 6 and "data_iterator" in meta
    for a, b in zip(jax.tree.leaves(s_straight), jax.tree.leaves(s_resumed)):
        np.testing.assert_array_equal(a, b)


def test_sample_mode_and_foreign_workdir_is_refused(digits_shards, tmp_path):
    c = tiny_config("repa")
    c.data.dir = digits_shards
    c.train.steps = 3
    run(c, tmp_path)
    out = modes.sample_mode(c, str(tmp_path), log=lambda *_: None)
    arr = np.load(out.replace(".png", ".npz"))["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (20, 8, 8, 1)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    other = tiny_config("repa")
    other.data.dir = digits_shards
    other.model.hidden = 64
    with pytest.raises(checkpoint.CheckpointMismatch, match="different model"):
        run(other, tmp_path)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_bad_inputs_stop_before_compute(digits_shards, tmp_path):
    c = tiny_config("reed")
    c.data.dir = digits_shards
    c.train.bach_size = 3
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'train.bach_size'"):
        config_lib.validate(c)
    c = tiny_config("reed")
    c.targets.digits_tokens.tap = "block9"
    with pytest.raises(config_lib.ConfigError,
                       match=r"targets.digits_tokens.tap='block9': expected 'block<N>' with N in 1..3"):
        config_lib.validate(c)
    c = tiny_config("reed")
    c.targets.digits_tokens.nosie_weight = "linear"
    with pytest.raises(config_lib.ConfigError, match="targets.digits_tokens.nosie_weight"):
        config_lib.validate(c)
    c = tiny_config("reed")
    c.train.batch_size = 12
    with pytest.raises(config_lib.ConfigError, match="train.batch_size=12 must be a positive multiple of the device count 8"):
        config_lib.validate(c, num_devices=8)
    c = tiny_config("reed")
    c.data.dir = digits_shards
    c.targets.digits_pooled.dim = 96
    with pytest.raises(records.DataError, match=r"targets.digits_pooled: config expects features of shape \(96,\)"):
        run(c, tmp_path / "w")
    c = tiny_config("reed")
    c.data.dir = str(tmp_path / "missing")
    with pytest.raises(records.DataError, match="missing.*does not exist"):
        run(c, tmp_path / "w")
    ckpt = tmp_path / "w" / "checkpoints"  # at most the workdir lock (reed_jax/lock.py), no checkpoint
    assert not os.path.exists(ckpt) or set(os.listdir(ckpt)) <= {".lock"}


def test_non_finite_steps_are_skipped_and_counted(digits_shards):
    c = tiny_config("reed")
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    step = train.make_train_step(c, model, tx)
    batch = {k: v for k, v in next(iter(pipeline.make_loader(digits_shards, "train", 16, seed=0))).items() if k != "index"}
    bad = dict(batch, image=np.where(np.arange(16)[:, None, None, None] == 3, np.nan, batch["image"]))
    before = jax.tree.map(np.asarray, (state.params, state.ema_params, state.opt_state))
    state, m = step(state, bad)
    after = jax.tree.map(np.asarray, (state.params, state.ema_params, state.opt_state))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    assert int(state.step) == 1 and int(m["skipped"]) == 1 and int(m["consecutive_skips"]) == 1
    state, m = step(state, bad)
    assert int(m["consecutive_skips"]) == 2
    state, m = step(state, batch)
    assert int(m["skipped"]) == 2 and int(m["consecutive_skips"]) == 0
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert not np.array_equal(state.params["projectors_digits_tokens"]["dense_0"]["kernel"],
                              before[0]["projectors_digits_tokens"]["dense_0"]["kernel"])


def test_scanned_model_trains_like_the_per_block_model(digits_shards):
    """model.scan=True: the same step (loss, updated params) from the same weights in stacked layout."""
    from reed_jax.image import sit

    c, c_scan = tiny_config("reed"), tiny_config("reed")
    c_scan.model.scan = True
    assert train.signature(c) != train.signature(c_scan)  # the param layouts differ: no cross-resume
    batch = {k: v for k, v in next(iter(pipeline.make_loader(digits_shards, "train", 16, seed=0))).items() if k != "index"}
    segments = sit.block_segments(c.model.depth, targets_lib.from_config(c))
    out = []
    for cfg, layout in ((c, lambda p: p), (c_scan, lambda p: sit.stack_blocks(p, segments))):
        model, tx = train.build_model(cfg), train.make_optimizer(cfg)
        state = train.init_state(c, train.build_model(c), train.make_optimizer(c))
        params = layout(state.params)
        state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))
        state, m = train.make_train_step(cfg, model, tx)(state, batch)
        out.append((float(m["loss/total"]), jax.tree.map(np.asarray, state.params)))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(sit.unstack_blocks(out[1][1], segments))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _perturbed_params(c, model, scale=0.1):
    """Init params with every weight perturbed (the adaLN-zero init predicts 0 everywhere)."""
    def init():
        leaves, tree = jax.tree.flatten(train.init_state(c, model, train.make_optimizer(c)).params)
        keys = jax.random.split(jax.random.PRNGKey(11), len(leaves))
        return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

    return jax.jit(init)()


@pytest.mark.parametrize("kind,path,time_sampler", [("pixels", "linear", "uniform"), ("latents", "cosine", "uniform"),
                                                    ("pixels", "linear", "lognormal"),
                                                    ("latents", "cosine", "lognormal")])
def test_image_losses_and_step_loss_match_a_hand_computation(kind, path, time_sampler):
    """One batch's generative and alignment terms computed by hand from the step's draws: the rng
    splits into (x0, t, eps, label-dropout) keys; x0 = (mean + std N) * latent_scale for latents;
    t ~ U(0, 1) or lognormal (r = exp(N(0, 1)); linear t = r / (1 + r), cosine t = 2/pi atan(r));
    x_t = a x0 + s eps, v = a' x0 + s' eps (linear a = 1 - t, s = t; cosine a = cos(pi t / 2),
    s = sin(pi t / 2)); L_gen = mean over C, H, W
    of (pred - v)^2; L_align = -mean over tokens of cos(proj, target) (pooled: one vector); the
    step's total = w_gen mean_b L_gen + w_align sum_k c_k mean_b L_align_k."""
    c = tiny_config("reed")
    c.curriculum.gen.warmup = 0
    c.diffusion.update(path=path, time_sampler=time_sampler)
    if kind == "latents":
        c.data.update(kind="latents", latent_scale=0.5)
    model = train.build_model(c)
    params = _perturbed_params(c, model)
    b, rng = 4, np.random.default_rng(0)
    batch = {"label": np.array([0, 3, 7, 9], np.int32),
             "target/digits_tokens": rng.normal(size=(b, 16, 64)).astype(np.float32),
             "target/digits_pooled": rng.normal(size=(b, 128)).astype(np.float32)}
    if kind == "pixels":
        batch["image"] = rng.uniform(-1, 1, (b, 8, 8, 1)).astype(np.float32)
    else:
        batch["moments"] = np.concatenate([rng.normal(size=(b, 8, 8, 1)), rng.uniform(0.1, 0.5, (b, 8, 8, 1))],
                                          -1).astype(np.float32)
    key = jax.random.PRNGKey(7)
    losses = jax.jit(lambda p, bt, k: image_track.losses(c, model, p, bt, k))
    gen, align, t = losses(params, batch, key)

    k_x0, k_t, k_eps, k_drop = jax.random.split(key, 4)
    f64 = lambda a: np.asarray(a, np.float64)
    if time_sampler == "uniform":
        t_h = f64(jax.random.uniform(k_t, (b,)))
    else:  # lognormal: noise-to-signal ratio exp(N(0, 1)); linear t = s / (1 + s), cosine t = 2/pi atan(s)
        ratio = np.exp(f64(jax.random.normal(k_t, (b,))))
        t_h = ratio / (1 + ratio) if path == "linear" else 2 / np.pi * np.arctan(ratio)
    if kind == "pixels":
        x0 = f64(batch["image"])
    else:
        mean, std = f64(batch["moments"][..., :1]), f64(batch["moments"][..., 1:])
        x0 = (mean + std * f64(jax.random.normal(k_x0, mean.shape))) * 0.5
    eps = f64(jax.random.normal(k_eps, x0.shape))
    tt = t_h[:, None, None, None]
    if path == "linear":
        a, s, da, ds = 1 - tt, tt, -1.0, 1.0
    else:
        a, s = np.cos(np.pi * tt / 2), np.sin(np.pi * tt / 2)
        da, ds = -np.pi / 2 * s, np.pi / 2 * a
    xt, v = a * x0 + s * eps, da * x0 + ds * eps
    fwd = jax.jit(lambda p, x, t, y, k: model.apply({"params": p}, x, t, y, train=True, rngs={"label_dropout": k}))
    pred, feats = fwd(params, jnp.asarray(xt, jnp.float32), jnp.asarray(t_h, jnp.float32), batch["label"], k_drop)
    gen_h = ((f64(pred) - v) ** 2).mean(axis=(1, 2, 3))

    def neg_cos(p, z):
        p, z = f64(p), f64(z)
        return -(p * z).sum(-1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(z, axis=-1))

    align_h = {"digits_tokens": neg_cos(feats["digits_tokens"], batch["target/digits_tokens"]).mean(-1),
               "digits_pooled": neg_cos(feats["digits_pooled"], batch["target/digits_pooled"])}
    np.testing.assert_allclose(t, t_h, rtol=1e-6)
    np.testing.assert_allclose(gen, gen_h, rtol=1e-5)
    assert set(align) == set(align_h)
    for n in align_h:
        np.testing.assert_allclose(align[n], align_h[n], rtol=1e-5, atol=1e-7)

    if (kind, time_sampler) != ("pixels", "uniform"):
        return
    # the step: the same terms at its key fold_in(state.rng, step), weighted (w_gen 1, w_align 0.5)
    tx = train.make_optimizer(c)
    state = jax.jit(lambda: train.init_state(c, model, tx))().replace(params=params)
    gen_s, align_s, _ = losses(params, batch, jax.random.fold_in(state.rng, 0))
    _, m = train.make_train_step(c, model, tx)(state, batch)
    total = float(np.mean(f64(gen_s))) + 0.5 * (1.0 * np.mean(f64(align_s["digits_tokens"]))
                                                 + 0.5 * np.mean(f64(align_s["digits_pooled"])))
    np.testing.assert_allclose(float(m["loss/total"]), total, rtol=1e-5)


def test_haste_stop_skips_the_alignment_compute_with_the_same_update(digits_shards):
    """From curriculum.align.stop_step on, the step takes the branch without the alignment: the
    same update as the zero alignment weight gives, loss/align_* logged 0, and the online encoder
    not run (a frozen encoder whose features are NaN poisons every step before the stop, none
    after it; the slow path, which still computes the alignment at weight 0, skips them all)."""
    from reed_jax.models.encoders import FrozenEncoder

    c = tiny_config("reed")
    c.curriculum.gen.warmup = 0
    c.curriculum.align.stop_step = 3
    model, tx = train.build_model(c), train.make_optimizer(c)
    batch = {k: v for k, v in next(iter(pipeline.make_loader(digits_shards, "train", 8, seed=0))).items() if k != "index"}
    fast, slow = train.make_train_step(c, model, tx), train.make_train_step(c, model, tx, skip_stopped_alignment=False)
    s_fast, s_slow = train.init_state(c, model, tx), train.init_state(c, model, tx)
    for i in range(5):
        s_fast, m_fast = fast(s_fast, batch)
        s_slow, m_slow = slow(s_slow, batch)
        np.testing.assert_allclose(float(m_fast["loss/total"]), float(m_slow["loss/total"]), rtol=1e-5)
        a_fast, a_slow = float(m_fast["loss/align_digits_tokens"]), float(m_slow["loss/align_digits_tokens"])
        if i < 3:
            assert a_fast == pytest.approx(a_slow, rel=1e-5) and a_fast != 0.0
        else:
            assert a_fast == 0.0 and a_slow != 0.0 and float(m_fast["weight/align"]) == 0.0
    for a, b in zip(jax.tree.leaves(s_fast.params), jax.tree.leaves(s_slow.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)

    tokens = batch["target/digits_tokens"]
    nan_encoder = FrozenEncoder("nan", lambda p, px: {"digits_tokens": jnp.full((px.shape[0],) + tokens.shape[1:], jnp.nan)},
                                {}, tokens.shape[-1])
    online = dict(batch, pixels=np.zeros((len(tokens), 8, 8, 3), np.uint8))
    skipped = {}
    for skip in (True, False):
        step = train.make_train_step(c, model, tx, frozen={"digits_tokens": nan_encoder}, skip_stopped_alignment=skip)
        state = train.init_state(c, model, tx)
        for _ in range(5):
            state, m = step(state, online)
        skipped[skip] = int(m["skipped"])
    assert skipped == {True: 3, False: 5}


def test_remat_note_on_cpu_without_scan():
    """The trainer's note that remat saves no memory on XLA:CPU unless the blocks are scanned."""
    c = tiny_config("reed")
    assert train.remat_note(c) is None  # remat none
    c.model.remat = "full"
    assert "saves no memory on XLA:CPU" in train.remat_note(c, "cpu")
    assert train.remat_note(c, "gpu") is None and train.remat_note(c, "tpu") is None
    c.model.scan = True
    assert train.remat_note(c, "cpu") is None
