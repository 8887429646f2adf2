"""Training: model and optimizer, train state, the jitted step, preemption, and the loop
(`--mode=train`), in the order they run.

Track-agnostic: the track (`reed_jax.tracks.get(config)`, looked up once) supplies the backbone,
its per-sample losses, the data iterator, online frozen encoders and the periodic evaluations;
this file owns the optimisation, checkpoints, resumption and preemption.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from reed_jax import (
    checkpoint,
    config as config_lib,
    curriculum,
    hostmem,
    lock,
    logs,
    objective,
    parallel,
    resume,
    tracks,
)
from reed_jax.data import precompute, records

# ----------------------------------------------------------------------------- model and optimizer


def build_model(config):
    """The backbone of `config.track` with its projectors."""
    return tracks.get(config).build_model(config)


def logical_specs(config, model) -> Any:
    """Logical axis names of the backbone's params (what `parallel.RULES` maps to the mesh); None
    for backbones without names (their arrays get the size-based FSDP tactic)."""
    return tracks.get(config).logical_specs(model)


def signature(config) -> dict:
    """What must match for a checkpoint to belong to this run's model."""
    return tracks.get(config).signature(config)


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

# ----------------------------------------------------------------------------- state


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array  # updates skipped for a non-finite loss or gradient, in total
    consecutive_skips: jax.Array  # ... since the last applied update


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite steps."""


def init_state(config, model, tx) -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    k_init, _, k_run = jax.random.split(key, 3)
    params = tracks.get(config).init_params(config, model, k_init)
    zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the step donates every leaf
    return TrainState(step=zero(), params=params, ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=tx.init(params), rng=k_run, skipped=zero(), consecutive_skips=zero())


def abstract_state(config, model, tx):
    return jax.eval_shape(lambda: init_state(config, model, tx))


def create_state(config, model, tx, shardings):
    """Train state initialised directly into its shardings (never materialised on one device)."""
    return jax.jit(lambda: init_state(config, model, tx), out_shardings=shardings)()

# ----------------------------------------------------------------------------- the step


def remat_note(config, backend: str | None = None) -> str | None:
    """A note for a config whose rematerialisation would not save memory here: on XLA:CPU,
    `model.remat` without `model.scan` recomputes the blocks but the scheduler keeps as much alive
    (SiT-S/2, batch 64 at 32x32: 13.1 vs 13.4 GB of temporaries; with scan 2.3 GB;
    `bench/throughput.py --compile_only`). None where there is nothing to say."""
    m = config.model
    if (backend or jax.default_backend()) != "cpu" or m.get("remat", "none") == "none" or m.get("scan", False):
        return None
    return (f"note: model.remat={m.remat!r} without model.scan recomputes but saves no memory on XLA:CPU "
            f"(SiT-S/2 batch 64 at 32x32: 13.1 vs 13.4 GB of temporaries; with model.scan=True 2.3 GB)")


def make_train_step(config, model, tx, losses_fn: Callable | None = None, mesh=None, shardings=None,
                    frozen: dict | None = None, skip_stopped_alignment: bool = True):
    """(state, batch) -> (state, metrics). batch: {field: [B, ...]} arrays.

    `frozen` ({key: encoders.FrozenEncoder} from encoders.build_online, `encoder.mode='online'`, each
    returning {target name: output}): those targets are computed inside the step from the batch's
    `pixels` (uint8 crops), under stop_gradient; the
    encoders' weights are a (replicated) argument of the jitted step, not constants baked into it.

    With `curriculum.align.stop_step` > 0 (HASTE), steps from it on skip the alignment's compute
    (the online encoders, projectors and alignment losses) and log loss/align_* as 0; the update is
    the one the zero alignment weight gives (`skip_stopped_alignment=False` computes it the slow way).
    The step is then an `AlignmentStop` (two compiled steps, the second compiled at the stop).

    A step whose loss or gradients are not finite keeps params, EMA and optimizer state
    as they were (the step counter still advances past the batch) and counts the skip.

    With a mesh and the state's shardings, the step is jitted with explicit in/out shardings
    (batch split over (data, fsdp), metrics replicated) and donates the input state.
    """
    w_gen, w_align = curriculum.from_config(config.curriculum)
    lr_at = learning_rate(config)
    targets = {n: dict(t) for n, t in config.targets.items()}
    decay = config.optim.ema_decay

    frozen = frozen or {}
    losses_fn = losses_fn or tracks.get(config).losses

    # HASTE's stop (curriculum.align.stop_step > 0): from that step on a second compiled step without
    # the alignment runs: no frozen encoder forward (unless it feeds REG's input token), no projectors
    # or alignment losses (dead code there, removed by XLA), loss/align_* logged 0. Its update is the
    # weight-0 step's (zero alignment gradients), without that step's cost. (A lax.cond between the
    # two inside one step was measured 1.17x slower after the stop and 1.27x before it, on CPU: its
    # gradient keeps zero-filled residuals of the branch not taken.)
    stop = int(config.curriculum.align.get("stop_step", 0)) if skip_stopped_alignment and targets else 0
    feeds_input = any(targets[n].get("entangle", 0) for key in frozen for n in key.split("+"))

    def step(state: TrainState, batch, frozen_params, aligned: bool = True):
        def with_targets(batch):
            feats = {}
            for n, enc in frozen.items():
                feats.update(enc.apply(frozen_params[n], batch["pixels"]))
            return dict(batch, **{records.TARGET_PREFIX + n: jax.lax.stop_gradient(v.astype(jnp.float32))
                                  for n, v in feats.items()})

        def with_placeholders(batch):  # the online targets' shapes, zeros: nothing reads them without alignment
            shapes = jax.eval_shape(with_targets, batch)
            return dict(batch, **{k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items() if k not in batch})

        batch = with_targets(batch) if aligned or feeds_input else with_placeholders(batch)
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            gen, align, t = losses_fn(config, model, params, batch, rng)
            if not aligned:
                align = {n: jnp.zeros_like(v) for n, v in align.items()}
            return objective.combine(gen, align, t, w_gen(state.step), w_align(state.step), targets)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        # decided before the update, so XLA fuses the keep-or-replace select into the optimizer and EMA
        # loops (one pass fewer over params, EMA and moments: 0.88-0.92x the step's CPU time, bench/vs_torch.py);
        # finite gradients and a finite optimizer state (which this guard keeps) give a finite update
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        skip = (~ok).astype(jnp.int32)
        new = state.replace(step=state.step + 1, params=keep(params, state.params),
                            ema_params=keep(ema, state.ema_params), opt_state=keep(opt_state, state.opt_state),
                            skipped=state.skipped + skip, consecutive_skips=(state.consecutive_skips + 1) * skip)
        metrics = dict(metrics, grad_norm=grad_norm, learning_rate=jnp.asarray(lr_at(state.step)),
                       skipped=new.skipped, consecutive_skips=new.consecutive_skips)
        return new, metrics

    # the frozen encoders' weights, put on the devices once (both compiled steps read them)
    params = {n: enc.params for n, enc in frozen.items()}
    if frozen:
        params = jax.device_put(params) if mesh is None else jax.device_put(params, parallel.replicated(mesh))

    def compiled(aligned: bool):
        fn = functools.partial(step, aligned=aligned)
        if not frozen:
            plain = lambda state, batch: fn(state, batch, {})
            if mesh is None:
                return jax.jit(plain, donate_argnums=0)
            return jax.jit(plain, in_shardings=(shardings, parallel.batch_sharding(mesh)),
                           out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
        if mesh is None:
            jitted = jax.jit(fn, donate_argnums=0)
        else:
            jitted = jax.jit(fn, in_shardings=(shardings, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
                             out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
        return lambda state, batch: jitted(state, batch, params)

    if not stop:
        return compiled(True)
    return AlignmentStop(compiled(True), compiled(False), stop)


class AlignmentStop:
    """A train step with HASTE's stop: `aligned` before step `stop`, `unaligned` from it on (each
    jitted on first use). `for_step(n)` picks by the number of steps done (what a loop that counts
    steps on the host calls, no device sync); calling it reads `state.step` (one sync per step)."""

    def __init__(self, aligned: Callable, unaligned: Callable, stop: int):
        self.aligned, self.unaligned, self.stop = aligned, unaligned, stop

    def for_step(self, steps_done: int) -> Callable:
        return self.aligned if steps_done < self.stop else self.unaligned

    def __call__(self, state, batch):
        return self.for_step(int(jax.device_get(state.step)))(state, batch)

# ----------------------------------------------------------------------------- preemption


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

# ----------------------------------------------------------------------------- the loop


def train_iterator(config, data_dir: str, log=print):
    """This process's training batches (an iterator with get_state/set_state), from the track."""
    nproc = jax.process_count()
    return tracks.get(config).train_iterator(config, data_dir, config.train.batch_size // nproc,
                                             jax.process_index(), nproc, log)


def check_data(config, data_dir: str) -> None:
    """Shards exist (sizes, and checksums per data.verify_checksums), and fit the track's config."""
    schema, manifest = records.read_manifest(data_dir)
    records.split_files(data_dir, manifest, "train", config.data.verify_checksums)
    tracks.get(config).check_data(config, schema, data_dir)


def summary_writer(workdir: str):
    """TensorBoard summaries under <workdir>/tensorboard (process 0; the others only log)."""
    from clu import metric_writers
    return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                just_logging=jax.process_index() > 0)


def _run(config, workdir, log, stop, track, data_dir, model, tx, mngr) -> dict:
    from tqdm import tqdm

    checkpoint.check_writable(mngr)
    sig = signature(config)
    checkpoint.check_signature(mngr, sig, workdir)

    mesh = parallel.make_mesh(config.mesh)
    abstract = abstract_state(config, model, tx)
    shardings = parallel.state_shardings(abstract, mesh, track.logical_specs(model))
    it = train_iterator(config, data_dir, log)
    data = resume.data_identity(data_dir)
    restored = checkpoint.restore_good(mngr, parallel.with_shardings(abstract, shardings), log)
    if restored is not None:
        state, meta = restored
        checkpoint.check_meta_signature(meta, sig, workdir)  # the one restored (an older one after a fall-back)
        resume.check_config_changes(config, meta, log)
        resume.resume_iterator(it, meta, data, data_dir, log, int(state.step))
        log(f"resumed from {mngr.directory} at step {int(state.step)}")
    else:
        state = create_state(config, model, tx, shardings)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f"model {config.model.name}: {n_params / 1e6:.2f}M parameters (projectors included); workdir {workdir}")
    if note := remat_note(config):
        log(note)
    if jax.default_backend() == "cpu" and config.train.get("cpu_reuse_memory", False) and hostmem.reuse_freed_memory():
        log("XLA:CPU: freed memory is kept for reuse by the next step (train.cpu_reuse_memory; no per-step page "
            "faults; the process keeps its peak memory)")

    evaluations = track.evaluations(config, workdir, data_dir, model, mesh, log)

    train_step = make_train_step(config, model, tx, mesh=mesh, shardings=shardings,
                                 frozen=track.frozen_encoders(config))
    writer = summary_writer(workdir)
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
        state, metrics = (train_step.for_step(step - 1) if isinstance(train_step, AlignmentStop)
                          else train_step)(state, batch)
        bar.update(1)
        if step % config.train.log_every == 0 or step == total:
            check_saves()  # an asynchronous save that failed is reported here, with its directory
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if metrics["consecutive_skips"] >= config.train.max_consecutive_skips:
                mngr.wait_until_finished()
                raise NonFiniteError(
                    f"stopped at step {step}: {int(metrics['consecutive_skips'])} consecutive steps with a "
                    f"non-finite loss or gradient (train.max_consecutive_skips="
                    f"{config.train.max_consecutive_skips}); last checkpoint saved without skips: "
                    f"{'none' if mngr.latest_step() is None else f'step {mngr.latest_step()}'} in {mngr.directory}")
            now = time.time()
            metrics["steps_per_sec"] = (step - n_last) / (now - t_last)
            metrics["examples_per_sec"] = metrics["steps_per_sec"] * config.train.batch_size
            t_last, n_last = now, step
            writer.write_scalars(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss/total']:.4f}", gen=f"{metrics['loss/gen']:.4f}")
        for e in evaluations:
            if step % e.every == 0 or step == total:
                result, picture = e.run(state.ema_params, step)
                writer.write_scalars(step, {f"{e.name}/{k}": v for k, v in result.items() if isinstance(v, float)})
                if picture is not None:
                    writer.write_images(step, {f"{e.name}/samples": picture[None]})
                if jax.process_index() == 0:
                    logs.write_json(os.path.join(workdir, "eval", f"{e.name}_{step:07d}.json"), result)
                if e.history:
                    last = result
                    history.append(result)
                    if jax.process_index() == 0:
                        logs.write_json(results_path, {"final": last, "evals": history})
                bar.write(logs.format_metrics(result))
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


def _train(config, workdir: str, log, stop: StopOnSignal) -> dict:
    config_lib.validate(config, jax.device_count())
    track = tracks.get(config)
    data_dir = precompute.data_dir(config, workdir)
    check_data(config, data_dir)
    track.preflight(config, "train")  # what the periodic evaluations read, before any compute
    model, tx = track.build_model(config), make_optimizer(config)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    try:  # closed in `finally`, so a failure's own message is the last thing printed
        return _run(config, workdir, log, stop, track, data_dir, model, tx, mngr)
    finally:
        mngr.close()


def train_and_evaluate(config, workdir: str, log=print) -> dict:
    """Train (resuming from the newest good checkpoint), evaluate periodically; returns the final eval.

    SIGTERM or SIGINT at any point (TPU preemption, SLURM time limit, Ctrl-C) saves the current
    step after the step in flight and returns; the next launch resumes there. Process 0 holds the
    workdir's lock (`reed_jax.lock`) for the whole run: a second trainer on it stops at once.
    """
    with lock.WorkdirLock(workdir, enabled=jax.process_index() == 0), StopOnSignal() as stop:
        return _train(config, workdir, log, stop)
