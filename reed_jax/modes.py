"""The modes after training, alike for every track: `--mode=sample` and `--mode=evaluate` restore
the latest checkpoint's EMA params and hand them to the track's hook.

Outputs, the same layout for every track:
    <workdir>/eval/evaluate_<step>.json    --mode=evaluate's metrics (also in TensorBoard, `evaluate/`)
    <workdir>/eval/<name>_<step>.json      the periodic evaluations during training (train.py)
    <workdir>/samples/...                  what the track's sampler wrote (grid PNG + npz, FASTA, SDF)
"""
from __future__ import annotations

import os

import jax

from reed_jax import checkpoint, config as config_lib, logs, parallel, tracks, train


def latest_ema(config, workdir: str, mesh=None):
    """(model, EMA params, step) of the latest checkpoint in `workdir` (its signature checked),
    restored into the state's shardings over `mesh` when given."""
    track = tracks.get(config)
    model, tx = track.build_model(config), train.make_optimizer(config)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}: train first (--mode=train)")
    checkpoint.check_signature(mngr, track.signature(config), workdir)
    abstract = train.abstract_state(config, model, tx)
    if mesh is not None:
        abstract = parallel.with_shardings(abstract, parallel.state_shardings(abstract, mesh,
                                                                             track.logical_specs(model)))
    state, _ = checkpoint.restore(mngr, abstract)
    return model, state.ema_params, int(state.step)


def evaluate_mode(config, workdir: str, log=print) -> dict:
    """`--mode=evaluate`: the track's metrics of the latest checkpoint's EMA params (images: FID-50K
    with sFID, IS, precision/recall; proteins: recovery on the held-out backbones; molecules:
    stability, validity, ...) -> <workdir>/eval/evaluate_<step>.json."""
    config_lib.validate(config, jax.device_count())
    track = tracks.get(config)
    track.preflight(config, "evaluate")
    mesh = parallel.make_mesh(config.mesh)
    model, params, step = latest_ema(config, workdir, mesh)
    result = track.evaluate(config, workdir, model, params, step, mesh, log)
    if jax.process_index() == 0:
        logs.write_json(os.path.join(workdir, "eval", f"evaluate_{step:07d}.json"), result)
    writer = train.summary_writer(workdir)
    writer.write_scalars(step, {f"evaluate/{k}": v for k, v in result.items() if isinstance(v, float)})
    writer.flush()
    log(logs.format_metrics(result))
    return result


def sample_mode(config, workdir: str, log=print) -> str:
    """`--mode=sample`: samples of the latest checkpoint's EMA params under <workdir>/samples/ (images:
    a grid PNG + npz; proteins: designed sequences as FASTA; molecules: SDF); returns the main file."""
    config_lib.validate(config, jax.device_count())
    track = tracks.get(config)
    track.preflight(config, "sample")
    mesh = parallel.make_mesh(config.mesh)
    model, params, step = latest_ema(config, workdir, mesh)
    return track.sample(config, workdir, model, params, step, mesh, log)
