"""Train state, train step, sampling and the training loop (`--mode=train`, `--mode=sample`).

One readable file in sections: model/optimizer -> state -> jitted step -> sampler -> loop.
The step is track-agnostic except for `image_losses`, which turns a batch into the per-sample
generative loss and the alignment inputs; other tracks plug in their own.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from reed_jax import checkpoint, config as config_lib, curriculum, lock, logs, objective, parallel, tracks
from reed_jax.image import grids as visualize
from reed_jax.data import pipeline, precompute, records
from reed_jax.image import interpolants, samplers
from reed_jax.models import encoders
from reed_jax.image import sit as sit_lib
from reed_jax.image.sit import TargetSpec, build_sit

# ----------------------------------------------------------------------------- model and optimizer


def target_specs(config) -> list[TargetSpec]:
    return [TargetSpec(n, t.depth, t.pooled, t.dim) for n, t in config.targets.items()]


def build_model(config):
    """The backbone of `config.track` with its projectors: SiT (image) or the track's own."""
    if (track := tracks.get(config)) is not None:
        return track.build_model(config)
    return build_sit(config.model, tuple(config.data.image_shape), config.data.num_classes, target_specs(config))


def logical_specs(model) -> Any:
    """Logical axis names of the backbone's params (what `parallel.RULES` maps to the mesh); None
    for backbones without names (their arrays get the size-based FSDP tactic)."""
    return sit_lib.logical_specs(model) if isinstance(model, sit_lib.SiT) else None


def learning_rate(config) -> optax.Schedule:
    """step -> learning rate: optim.lr, after a linear warm-up over optim.warmup_steps (from
    optim.warmup_init x lr at step 0) when set."""
    o = config.optim
    if not o.warmup_steps:
        return optax.constant_schedule(o.lr)
    return optax.linear_schedule(o.get("warmup_init", 0.0) * o.lr, o.lr, o.warmup_steps)


def make_optimizer(config) -> optax.GradientTransformation:
    o = config.optim
    lr = learning_rate(config)
    if o.amsgrad:
        opt = optax.chain(optax.amsgrad(lr, b1=o.b1, b2=o.b2, eps=o.eps),
                          *([optax.add_decayed_weights(-o.weight_decay * o.lr)] if o.weight_decay else []))
    else:
        opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)


def signature(config) -> dict:
    """What must match for a checkpoint to belong to this run's model."""
    m = config.model
    if (track := tracks.get(config)) is not None:
        return track.signature(config)
    return {"model": [m.depth, m.hidden, m.heads, m.patch_size, m.mlp_ratio, m.projector_width],
            "scan": bool(m.scan),  # the param layout: per-block or stacked runs
            "data_shape": list(config.data.image_shape), "num_classes": config.data.num_classes,
            "targets": {n: [t.depth, bool(t.pooled), t.dim] for n, t in config.targets.items()}}

# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array  # updates skipped for a non-finite loss, gradient or update, in total
    consecutive_skips: jax.Array  # ... since the last applied update


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite steps."""


def init_state(config, model, tx) -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    k_init, k_drop, k_run = jax.random.split(key, 3)
    if (track := tracks.get(config)) is not None:
        params = track.init_params(config, model, k_init)
    else:
        x = jnp.zeros((1,) + tuple(config.data.image_shape))
        params = flax.linen.unbox(model.init({"params": k_init, "label_dropout": k_drop}, x, jnp.zeros((1,)),
                                             jnp.zeros((1,), jnp.int32), train=True)["params"])
    zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the step donates every leaf
    return TrainState(step=zero(), params=params, ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=tx.init(params), rng=k_run, skipped=zero(), consecutive_skips=zero())


def abstract_state(config, model, tx):
    return jax.eval_shape(lambda: init_state(config, model, tx))

# ----------------------------------------------------------------------------- train step


def image_losses(config, model, params, batch, rng):
    """Images/latents: per-sample velocity MSE [B], alignment losses {name: [B]} and t [B]."""
    k_x0, k_t, k_eps, k_drop = jax.random.split(rng, 4)
    d = config.data
    x0 = batch["image"] if d.kind == "pixels" else interpolants.x0_from_moments(k_x0, batch["moments"], d.latent_scale)
    t = interpolants.sample_time(config.diffusion.time_sampler, k_t, x0.shape[0], config.diffusion.path)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    xt, v = interpolants.interpolate(config.diffusion.path, x0, eps, t)
    pred, feats = model.apply({"params": params}, xt, t, batch["label"], train=True, rngs={"label_dropout": k_drop})
    align = {n: objective.alignment_loss(feats[n], batch[records.TARGET_PREFIX + n]) for n in feats}
    return objective.mse_per_sample(pred, v), align, t


def track_losses(config) -> Callable:
    """The track's (config, model, params, batch, rng) -> (gen [B], align {name: [B]}, t [B])."""
    if (track := tracks.get(config)) is not None:
        return track.losses
    return image_losses


def make_train_step(config, model, tx, losses_fn: Callable | None = None, mesh=None, shardings=None,
                    frozen: dict | None = None):
    """(state, batch) -> (state, metrics). batch: {field: [B, ...]} arrays.

    `frozen` ({target name: encoders.FrozenEncoder}, `encoder.mode='online'`): those targets are
    computed inside the step from the batch's `pixels` (uint8 crops), under stop_gradient; the
    encoders' weights are a (replicated) argument of the jitted step, not constants baked into it.

    A step whose loss, gradients or update are not finite keeps params, EMA and optimizer state
    as they were (the step counter still advances past the batch) and counts the skip.

    With a mesh and the state's shardings, the step is jitted with explicit in/out shardings
    (batch split over (data, fsdp), metrics replicated) and donates the input state.
    """
    w_gen, w_align = curriculum.from_config(config.curriculum)
    lr_at = learning_rate(config)
    targets = {n: dict(t) for n, t in config.targets.items()}
    decay = config.optim.ema_decay

    frozen = frozen or {}
    losses_fn = losses_fn or track_losses(config)

    def step(state: TrainState, batch, frozen_params):
        if frozen:
            batch = dict(batch, **{records.TARGET_PREFIX + n: jax.lax.stop_gradient(
                enc.apply(frozen_params[n], batch["pixels"]).astype(jnp.float32)) for n, enc in frozen.items()})
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            gen, align, t = losses_fn(config, model, params, batch, rng)
            return objective.combine(gen, align, t, w_gen(state.step), w_align(state.step), targets)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        skip = (~ok).astype(jnp.int32)
        new = state.replace(step=state.step + 1, params=keep(params, state.params),
                            ema_params=keep(ema, state.ema_params), opt_state=keep(opt_state, state.opt_state),
                            skipped=state.skipped + skip, consecutive_skips=(state.consecutive_skips + 1) * skip)
        metrics = dict(metrics, grad_norm=grad_norm, learning_rate=jnp.asarray(lr_at(state.step)),
                       skipped=new.skipped, consecutive_skips=new.consecutive_skips)
        return new, metrics

    if not frozen:
        plain = lambda state, batch: step(state, batch, {})
        if mesh is None:
            return jax.jit(plain, donate_argnums=0)
        return jax.jit(plain, in_shardings=(shardings, parallel.batch_sharding(mesh)),
                       out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
    params = {n: enc.params for n, enc in frozen.items()}
    if mesh is None:
        fn, params = jax.jit(step, donate_argnums=0), jax.device_put(params)
    else:
        fn = jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
                     out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
        params = jax.device_put(params, parallel.replicated(mesh))
    return lambda state, batch: fn(state, batch, params)


def online_encoders(config) -> dict:
    """{target name: FrozenEncoder} run inside the step (`encoder.mode='online'`), else {}; each one's
    output shape is checked against its target before any compute."""
    from reed_jax.image import precompute as precompute_images

    if config.encoder.mode != "online":
        return {}
    shapes = config_lib.target_shapes(config)
    out = {}
    for name, t in precompute_images.image_targets(config).items():
        enc = encoders.build(name, t, config)
        s = config.data.image_size
        have = jax.eval_shape(enc.apply, enc.params, jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8)).shape[1:]
        if tuple(have) != tuple(shapes[name]):
            raise records.DataError(f"targets.{name}: encoder {t.encoder} gives features of shape {tuple(have)} on "
                                    f"{s}x{s} crops; the config expects {tuple(shapes[name])}")
        out[name] = enc
    return out


def create_state(config, model, tx, shardings):
    """Train state initialised directly into its shardings (never materialised on one device)."""
    return jax.jit(lambda: init_state(config, model, tx), out_shardings=shardings)()

# ----------------------------------------------------------------------------- sampling


def make_sample_fn(config, model):
    """(params, rng, labels [B]) -> samples [B, H, W, C] with the config's sampler and CFG."""
    s = config.sample
    shape = tuple(config.data.image_shape)

    @jax.jit
    def fn(params, rng, labels):
        k_x, k_s = jax.random.split(rng)
        model_fn = lambda x, t, y: model.apply({"params": params}, x, t, y, with_projectors=False)[0]
        v = samplers.guided(model_fn, s.cfg_scale, config.data.num_classes, (s.guidance_lo, s.guidance_hi))
        x1 = jax.random.normal(k_x, (labels.shape[0],) + shape)
        return samplers.sample(v, x1, labels, method=s.method, num_steps=s.num_steps, rng=k_s,
                               path=config.diffusion.path)

    return fn


def generate(sample_fn, params, labels: np.ndarray, batch_size: int, seed: int, mesh=None) -> np.ndarray:
    """Samples for `labels` in fixed-size batches (the last one padded), deterministic by seed.
    With a mesh, each batch is split over its (data, fsdp) axes."""
    out = []
    for i in range(0, len(labels), batch_size):
        y = labels[i:i + batch_size]
        pad = batch_size - len(y)
        y_full = np.concatenate([y, np.zeros(pad, y.dtype)])
        y_dev = jax.device_put(y_full, parallel.batch_sharding(mesh)) if mesh is not None else jnp.asarray(y_full)
        x = sample_fn(params, jax.random.fold_in(jax.random.PRNGKey(seed), i), y_dev)
        if jax.process_count() > 1:  # every process gets the whole batch
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        out.append(np.asarray(jax.device_get(x))[:len(y)])
    return np.concatenate(out)


def grid_labels(config) -> np.ndarray:
    """One row per class (`sample.grid_classes` of them spread over the labels, 0 = all),
    `sample.grid_per_class` columns."""
    n, k = config.data.num_classes, config.sample.grid_classes
    classes = np.arange(n) if not k or k >= n else np.linspace(0, n - 1, k).round().astype(int)
    return np.repeat(classes, config.sample.grid_per_class).astype(np.int32)

# ----------------------------------------------------------------------------- the loop


def check_data(config, data_dir: str) -> None:
    """Shards exist, hold the configured targets with the configured widths, and one batch fits."""
    from reed_jax.image import precompute as precompute_images

    schema, manifest = records.read_manifest(data_dir)
    records.split_files(data_dir, manifest, "train", config.data.verify_checksums)
    if (track := tracks.get(config)) is not None:
        return track.check_data(config, schema, data_dir)
    shapes = config_lib.target_shapes(config)
    if config.encoder.mode == "online":
        for name in precompute_images.image_targets(config):
            shapes.pop(name)
        s = config.data.image_size
        if "pixels" not in schema.names or tuple(schema.field("pixels").shape) != (s, s, 3):
            raise records.DataError(f"encoder.mode='online' needs crops (field 'pixels' [{s}, {s}, 3]) in the shards "
                                    f"in {data_dir!r}; they hold {schema.names}: precompute with encoder.mode='online'")
    records.check_targets(schema, shapes, data_dir)
    x_field = "image" if config.data.kind == "pixels" else "moments"
    want = tuple(config.data.image_shape)
    if x_field == "moments":
        want = want[:-1] + (2 * want[-1],)
    have = schema.field(x_field).shape
    if tuple(have) != want:
        raise records.DataError(f"data.image_shape={tuple(config.data.image_shape)} expects field {x_field!r} of "
                                f"shape {want}, shards in {data_dir!r} hold {tuple(have)}")


def _writer(workdir):
    from clu import metric_writers
    return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                just_logging=jax.process_index() > 0)


def evaluate(config, workdir: str, sample_fn, params, step: int, scorer=None, log=print,
             mesh=None, render: Callable = lambda x: x) -> tuple[dict, np.ndarray]:
    """Sample a grid (PNG, one row per class; `render` turns samples into images) and, for digits,
    digits-FD and sample accuracy. Returns (result, grid images [N, H, W, C] in [-1, 1])."""
    grid = render(generate(sample_fn, params, grid_labels(config), config.sample.batch_size, config.seed + 1, mesh))
    path = os.path.join(workdir, "samples", f"grid_{step:07d}.png")
    if jax.process_index() == 0:  # files from process 0 only
        visualize.save_grid(grid, config.sample.grid_per_class, path, upscale=4)
    result = {"step": step, "grid": path}
    if scorer is not None:
        n = config.eval.num_samples
        labels = (np.arange(n) % config.data.num_classes).astype(np.int32)
        images = generate(sample_fn, params, labels, config.sample.batch_size, config.seed + 2, mesh)
        result.update(scorer(images, labels))
    return result, grid


def make_evaluator(config, workdir: str, data_dir: str, model, mesh, render: Callable, log=print) -> Callable:
    """(params, step) -> (result dict, grid images or None): the track's periodic evaluation."""
    if (track := tracks.get(config)) is not None:
        return track.make_evaluator(config, workdir, data_dir, model, log)
    scorer = None
    if config.data.source == "digits":
        from reed_jax.image import digits
        from reed_jax.image.digits_fd import DigitsScorer
        scorer = DigitsScorer(precompute.fd_params(config, data_dir, log), digits.load()[0])
    sample_fn = make_sample_fn(config, model)
    return lambda params, step: evaluate(config, workdir, sample_fn, params, step, scorer, log, mesh, render)


def train_iterator(config, data_dir: str, log=print):
    """This process's training batches (iterator with get_state/set_state): grain over the shards, or
    the track's own iterator (length buckets, host-side noise pairing)."""
    nproc, batch = jax.process_count(), config.train.batch_size // jax.process_count()
    if (track := tracks.get(config)) is not None:
        return track.train_iterator(config, data_dir, batch, jax.process_index(), nproc, log)
    return pipeline.GlobalBatches(pipeline.open_split(data_dir, "train"), config.train.batch_size, seed=config.seed,
                                  shard_index=jax.process_index(), shard_count=nproc)


def train_and_evaluate(config, workdir: str, log=print) -> dict:
    """Train (resuming from the newest good checkpoint), evaluate periodically; returns the final eval.

    SIGTERM or SIGINT at any point (TPU preemption, SLURM time limit, Ctrl-C) saves the current
    step after the step in flight and returns; the next launch resumes there. Process 0 holds the
    workdir's lock (`reed_jax.lock`) for the whole run: a second trainer on it stops at once.
    """
    with lock.WorkdirLock(workdir, enabled=jax.process_index() == 0), StopOnSignal() as stop:
        return _train(config, workdir, log, stop)


def _train(config, workdir: str, log, stop: "StopOnSignal") -> dict:
    config_lib.validate(config, jax.device_count())
    data_dir = precompute.data_dir(config, workdir)
    check_data(config, data_dir)
    frozen = online_encoders(config)
    render = grid_renderer(config, log)
    if config.eval.fid_every:  # the in-training FID's inputs are checked before any compute
        from reed_jax.image import fid_eval
        fid_eval.check_inputs(config.eval, f"eval.fid_every={config.eval.fid_every}")
    model, tx = build_model(config), make_optimizer(config)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    try:  # closed in `finally`, so a failure's own message is the last thing printed
        return _run(config, workdir, log, stop, data_dir, frozen, render, model, tx, mngr)
    finally:
        mngr.close()


def _resume_config(config, meta: dict, log) -> None:
    """Log every config key that differs from the checkpoint's run; refuse a changed batch size
    (it silently changes the data order and the optimisation) unless train.allow_batch_size_change."""
    if "config" not in meta:
        return
    changes = checkpoint.config_changes(meta["config"], json.loads(config.to_json_best_effort()))
    if not changes:
        return
    log("resuming with changed config keys: " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    if "train.batch_size" in changes and not config.train.allow_batch_size_change:
        a, b = changes["train.batch_size"]
        raise config_lib.ConfigError(f"train.batch_size={b} but the checkpoint was trained with {a}: resuming would "
                                     f"change the data order and the optimisation; set "
                                     f"--config.train.allow_batch_size_change=True to resume anyway")


def data_identity(data_dir: str) -> dict:
    """What the training data is, independent of where it lies: the train shards' sha256s (from the
    manifest, in order) and their record count. Stored in each checkpoint's meta."""
    _, manifest = records.read_manifest(data_dir)
    rows = [r for r in manifest["shards"] if r["split"] == "train"]
    return {"train_sha256": [r["sha256"] for r in rows], "train_records": int(sum(r["count"] for r in rows))}


def _rebase(saved, current):
    """The saved iterator state with each `data_source` entry (grain's identity of the shard paths)
    replaced by the current iterator's: used once the shards' content is known to be the same."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return {k: current[k] if k == "data_source" and k in current else _rebase(v, current.get(k))
                for k, v in saved.items()}
    if isinstance(saved, str) and isinstance(current, str) and saved[:1] == "{" and current[:1] == "{":
        try:
            return json.dumps(_rebase(json.loads(saved), json.loads(current)))
        except ValueError:
            return saved
    return saved


def resume_iterator(it, meta: dict, data: dict, data_dir: str, log, step: int = 0) -> None:
    """Continue `it` where the checkpoint's run stopped. Shards are identified by content: the same
    shards in another directory resume; other shards are refused, naming what differs."""
    state = meta.get("data_iterator")
    if not state:  # an imported checkpoint: no data position to continue from
        log("checkpoint has no data-iterator state (imported): data order starts from the beginning")
        return
    if "data" in meta:
        if meta["data"] != data:
            old, new = meta["data"], data
            diff = [i for i, (a, b) in enumerate(zip(old["train_sha256"], new["train_sha256"])) if a != b]
            raise records.DataError(
                f"the checkpoint was trained on other shards than those in {data_dir!r} ({old['train_records']} "
                f"records in {len(old['train_sha256'])} shards then, {new['train_records']} in "
                f"{len(new['train_sha256'])} now; train shards differing in sha256: {diff}); resume with the "
                f"same data, or use another --workdir")
        state = json.dumps(_rebase(json.loads(state), json.loads(it.get_state().decode())))
    if isinstance(it, pipeline.GlobalBatches) and "last_seen_indices" in json.loads(state):
        log(f"the checkpoint's data position is grain's per-process loader (an earlier version): training continues "
            f"at global batch {step} of the process-count-independent order")
        it.skip_to(step)
        return
    it.set_state(state.encode())


def _run(config, workdir, log, stop, data_dir, frozen, render, model, tx, mngr) -> dict:
    from tqdm import tqdm

    checkpoint.check_writable(mngr)
    sig = signature(config)
    checkpoint.check_signature(mngr, sig, workdir)

    mesh = parallel.make_mesh(config.mesh)
    abstract = abstract_state(config, model, tx)
    shardings = parallel.state_shardings(abstract, mesh, logical_specs(model))
    nproc = jax.process_count()
    it = train_iterator(config, data_dir, log)
    data = data_identity(data_dir)
    restored = checkpoint.restore_good(mngr, parallel.with_shardings(abstract, shardings), log)
    if restored is not None:
        state, meta = restored
        checkpoint.check_meta_signature(meta, sig, workdir)  # the one restored (an older one after a fall-back)
        _resume_config(config, meta, log)
        resume_iterator(it, meta, data, data_dir, log, int(state.step))
        log(f"resumed from {mngr.directory} at step {int(state.step)}")
    else:
        state = create_state(config, model, tx, shardings)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"model {config.model.name}: {n_params / 1e6:.2f}M parameters (projectors included); workdir {workdir}")

    run_eval = make_evaluator(config, workdir, data_dir, model, mesh, render, log)

    train_step = make_train_step(config, model, tx, mesh=mesh, shardings=shardings, frozen=frozen)
    writer = _writer(workdir)
    writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
    start, total = int(state.step), config.train.steps
    results_path = os.path.join(workdir, "results.json")
    history = []
    if os.path.exists(results_path) and start > 0:
        history = logs.read_json(results_path, "this run's evaluation history")["evals"]
        history = [r for r in history if r.get("step", 0) <= start]  # evals after the resumed step are redone
    last = history[-1] if history else None
    run_config = json.loads(config.to_json_best_effort())

    def save(step, force=False) -> bool:
        """Save `step` unless it is inside a streak of skipped (non-finite) steps: such a state is not
        one to resume from, so the newest checkpoint stays the last one saved without skips."""
        skips = int(jax.device_get(state.consecutive_skips))
        if skips:
            log(f"step {step}: not saving a checkpoint during a streak of {skips} skipped non-finite steps; the "
                f"newest checkpoint stays {'none' if mngr.latest_step() is None else f'step {mngr.latest_step()}'}")
            return False
        checkpoint.save(mngr, step, state, {"signature": sig, "data_iterator": it.get_state().decode(),
                                            "data": data, "config": run_config}, force)
        return True

    def check_saves():
        try:
            mngr.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise checkpoint.CheckpointSaveError(f"saving a checkpoint to {mngr.directory} failed: "
                                                 f"{type(e).__name__}: {e}") from e

    t_last, n_last = time.time(), start
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=2.0,
               disable=jax.process_index() > 0)
    for step in range(start + 1, total + 1):
        batch = parallel.global_batch({k: v for k, v in next(it).items() if k != "index"}, mesh)
        state, metrics = train_step(state, batch)
        bar.update(1)
        if step % config.train.log_every == 0 or step == total:
            check_saves()  # an asynchronous save that failed is reported here, with its directory
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if metrics["consecutive_skips"] >= config.train.max_consecutive_skips:
                mngr.wait_until_finished()
                raise NonFiniteError(
                    f"stopped at step {step}: {int(metrics['consecutive_skips'])} consecutive steps with a "
                    f"non-finite loss, gradient or update (train.max_consecutive_skips="
                    f"{config.train.max_consecutive_skips}); last checkpoint saved without skips: "
                    f"{'none' if mngr.latest_step() is None else f'step {mngr.latest_step()}'} in {mngr.directory}")
            now = time.time()
            metrics["steps_per_sec"] = (step - n_last) / (now - t_last)
            metrics["examples_per_sec"] = metrics["steps_per_sec"] * config.train.batch_size
            t_last, n_last = now, step
            writer.write_scalars(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss/total']:.4f}", gen=f"{metrics['loss/gen']:.4f}")
        if step % config.train.eval_every == 0 or step == total:
            last, grid_images = run_eval(state.ema_params, step)
            history.append(last)
            writer.write_scalars(step, {f"eval/{k}": v for k, v in last.items() if isinstance(v, float)})
            if grid_images is not None:
                grid_png = visualize.grid(visualize.to_uint8(grid_images), config.sample.grid_per_class)
                writer.write_images(step, {"samples": grid_png[None]})
            if jax.process_index() == 0:
                logs.write_json(results_path, {"final": last, "evals": history})
            bar.write(logs.format_metrics(last))
        if config.eval.fid_every and (step % config.eval.fid_every == 0 or step == total):
            r = fid_evaluate(config, workdir, state.ema_params, step, mesh, config.eval.fid_every_samples,
                             log=bar.write)
            writer.write_scalars(step, {f"fid{r['num_samples']}/{k}": v for k, v in r.items()
                                        if isinstance(v, float) and k != "seconds"})
        due = step % config.train.checkpoint_every == 0 or step == total
        saved = due and save(step)
        if stop.agreed():
            if not due:
                saved = save(step, force=True)
            log(f"signal {stop.signum}: {f'saved step {step}' if saved else 'resume from'} "
                f"{'to' if saved else 'step ' + str(mngr.latest_step()) + ' in'} {mngr.directory}; relaunch to resume")
            break
    bar.close()
    mngr.wait_until_finished()
    check_saves()
    writer.flush()
    return last or {}


def fid_evaluate(config, workdir: str, params, step: int, mesh=None, num_samples: int | None = None,
                 decode: Callable | None = None, log=print) -> dict:
    """FID/sFID/IS/precision-recall of `params` (EMA) on `num_samples` (default eval.fid_samples)
    samples; resumable per batch (see reed_jax.image.fid_eval). Returns the metrics."""
    from reed_jax.image import fid_eval

    e, s = config.eval, config.sample
    if config.data.kind == "latents" and decode is None:
        decode = latent_decoder(config)
    n = num_samples or e.fid_samples
    bs = e.fid_batch_size or s.batch_size
    extractor = fid_eval.Extractor(fid_eval.load_inception_params(e.inception_path), e.inception_batch_size,
                                   e.inception_size)
    eval_root = os.path.join(workdir, "eval")
    ref = fid_eval.load_reference(e.reference, extractor, eval_root, log)
    tag = (f"step{step:07d}_{s.method}{s.num_steps}_cfg{s.cfg_scale:g}_{s.guidance_lo:g}-{s.guidance_hi:g}"
           f"_n{n}_seed{config.seed}" + ("" if e.inception_size == 299 else f"_inception{e.inception_size}"))
    out_dir = os.path.join(eval_root, tag)
    sample_fn = make_sample_fn(config, build_model(config))

    def make_images(b):
        labels = fid_eval.batch_labels(config.seed, b, bs, config.data.num_classes)
        x = generate(sample_fn, params, labels, bs, seed=config.seed * 1_000_003 + b, mesh=mesh)
        return fid_eval.to_rgb_uint8(decode(x) if decode is not None else x)

    t0 = time.time()
    paths = fid_eval.run_batches(os.path.join(out_dir, "batches"), n, bs, make_images, extractor, e.save_npz, log)
    if jax.process_count() > 1:  # process 0 writes the batch files: every process scores them once all exist
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"fid batches {tag}")
    result = dict(fid_eval.score(paths, n, ref, frechet_method=e.frechet_method), step=step, tag=tag,
                  seconds=time.time() - t0)
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
            json.dump(result, fh, indent=1)
        if e.save_npz:
            fid_eval.write_samples_npz(paths, n, os.path.join(out_dir, "samples.npz"))
    log(logs.format_metrics(result))
    return result


def decoder_path(config) -> tuple[str, str]:
    """(path, config key) of the SD-VAE whose decoder renders latents: eval.vae_decoder_path (the
    protocol's sd-vae-ft-ema), else precompute.vae_path (the encoder of the shards)."""
    if config.eval.vae_decoder_path:
        return config.eval.vae_decoder_path, "eval.vae_decoder_path"
    return config.precompute.vae_path, "precompute.vae_path"


def latent_decoder(config) -> Callable:
    """latents [B, h, w, 4] (scaled by data.latent_scale) -> images [B, H, W, 3] in [-1, 1] through
    the SD-VAE decoder of `decoder_path(config)`."""
    from reed_jax.image import precompute as precompute_images

    path, key = decoder_path(config)
    vae, vae_params = precompute_images.build_vae(path, config.precompute.vae_groups, key)
    fn = jax.jit(lambda p, z: vae.apply({"params": p}, z / config.data.latent_scale, method=vae.decode))
    vae_params = jax.device_put(vae_params)
    return lambda z: np.asarray(fn(vae_params, z))


def grid_renderer(config, log=print) -> Callable:
    """samples -> images in [-1, 1] for PNG grids: pixels as they are; latents decoded by the VAE
    decoder when its weights exist, else (training without them) latent channels 0-2 rescaled."""
    if config.data.kind == "pixels":
        return lambda x: x
    path, key = decoder_path(config)
    if path and os.path.exists(path):
        return latent_decoder(config)
    log(f"{key}={path!r} does not exist: sample grids show latent channels 0-2, not decoded images")
    return lambda z: np.clip(np.asarray(z)[..., :3] / 2.0, -1.0, 1.0)


def evaluate_mode(config, workdir: str, log=print) -> dict:
    """`--mode=evaluate`: FID-`eval.fid_samples` of the latest checkpoint's EMA params (images), or
    the protein metrics on the held-out backbones."""
    from reed_jax.image import fid_eval

    config_lib.validate(config, jax.device_count())
    if (track := tracks.get(config)) is not None:
        return track.evaluate_mode(config, workdir, log)
    fid_eval.check_inputs(config.eval, "--mode=evaluate")
    path, key = decoder_path(config)
    if config.data.kind == "latents" and not os.path.exists(path or ""):
        raise fid_eval.EvalError(f"--mode=evaluate of a latent model needs {key} (an SD-VAE whose decoder renders "
                                 f"the samples; eval.vae_decoder_path, else precompute.vae_path); {path!r} does not exist")
    mesh = parallel.make_mesh(config.mesh)
    _, params, step = latest_ema(config, workdir, mesh)
    result = fid_evaluate(config, workdir, params, step, mesh, log=log)
    writer = _writer(workdir)
    writer.write_scalars(step, {f"fid{result['num_samples']}/{k}": v for k, v in result.items()
                                if isinstance(v, float) and k != "seconds"})
    writer.flush()
    return result


class StopOnSignal:
    """Context in which SIGTERM (TPU preemption, SLURM time limit) and SIGINT (Ctrl-C) only set
    `signum`; the loop then saves the current step and exits cleanly. A second SIGINT stops at once
    (KeyboardInterrupt). The previous handlers are restored on exit.

    In a multi-process run a signal may reach one process only: `agreed()`, called by every
    process after each step, all-gathers the processes' flags, so all of them stop after the same
    step and save it together (none is left waiting in a collective)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals, self.signum, self._old = signals, None, {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self) -> bool:
        """True on every process once any process has been signalled (a collective when
        jax.process_count() > 1: call it at the same point on every process)."""
        if jax.process_count() == 1:
            return self.signum is not None
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.int32(0 if self.signum is None else self.signum))
        if self.signum is None and np.any(flags):
            self.signum = int(np.max(flags))
        return bool(np.any(flags))

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def latest_ema(config, workdir: str, mesh=None):
    """(model, EMA params, step) of the latest checkpoint in `workdir` (its signature checked),
    restored into the state's shardings over `mesh` when given."""
    model, tx = build_model(config), make_optimizer(config)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}: train first (--mode=train)")
    checkpoint.check_signature(mngr, signature(config), workdir)
    abstract = abstract_state(config, model, tx)
    if mesh is not None:
        abstract = parallel.with_shardings(abstract, parallel.state_shardings(abstract, mesh, logical_specs(model)))
    state, _ = checkpoint.restore(mngr, abstract)
    return model, state.ema_params, int(state.step)


def sample_mode(config, workdir: str, log=print) -> str:
    """Load the latest checkpoint's EMA params and write samples: for images a grid and an npz
    (`arr_0`, uint8 NHWC); for proteins designed sequences of the held-out backbones (FASTA)."""
    config_lib.validate(config, jax.device_count())
    if (track := tracks.get(config)) is not None:
        return track.sample_mode(config, workdir, log)
    mesh = parallel.make_mesh(config.mesh)
    model, params, step = latest_ema(config, workdir, mesh)
    labels = grid_labels(config)
    samples = generate(make_sample_fn(config, model), params, labels, config.sample.batch_size, config.seed + 3, mesh)
    images = grid_renderer(config, log)(samples)
    out = os.path.join(workdir, "samples", f"sample_{step:07d}.png")
    if jax.process_index() == 0:  # files from process 0 only
        visualize.save_grid(images, config.sample.grid_per_class, out, upscale=4)
        np.savez(out.replace(".png", ".npz"), arr_0=visualize.to_uint8(images), labels=labels,
                 **({"latents": samples} if config.data.kind == "latents" else {}))
        log(f"wrote {out} and {out.replace('.png', '.npz')}")
    return out
