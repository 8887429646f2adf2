"""Import a published PyTorch SiT / REPA / REED checkpoint into an orbax checkpoint (`--mode=import`).

    python main.py --config=configs/imagenet_sit_xl_2_repa.py --workdir=DIR --mode=import \\
        --torch_checkpoint=/data/last.pt [--torch_key=ema] [--import_step=4000000] [--torch_projectors=dinov2,vlm]

Reads the `.pt` without torch (`convert.torch_file`), takes the state dict under `--torch_key`
(default: `ema` when the file has one, else `model`, else the file itself), converts it with
`image.convert_sit.from_torch` for the config's model (projectors kept, in `--torch_projectors` order or
token-level targets first; dropped when the config has no targets; blocks stacked when `model.scan`),
checks every shape against
the config, and writes step `--import_step` with params = EMA = the imported weights and a fresh
optimizer state. `--mode=evaluate` and `--mode=sample` then use it, and `--mode=train` continues
from it (with the data order from the beginning). An existing checkpoint is never overwritten.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import checkpoint, targets as targets_lib, train
from reed_jax.convert import torch_file
from reed_jax.image import convert_sit, sit


class ImportError_(ValueError):
    """The checkpoint does not fit the config; the message names the key or shape."""


def read_state_dict(path: str, key: str | None = None) -> tuple[dict, str]:
    """(state dict, the key it came from) with the ema > model > whole-file default."""
    obj = torch_file.load(path)
    if key is None and isinstance(obj, dict):
        key = next((k for k in ("ema", "model") if isinstance(obj.get(k), dict)), None)
    return torch_file.load_state_dict(path, key), key or "(file)"


def projector_order(config, names: str | None = None) -> list[str]:
    """Our target names for the reference's `projectors.0, 1, ...`: `names` ('a,b') if given, else
    the token-level targets then the pooled ones (REED: DINOv2 tokens first, the VLM vector second)."""
    if names:
        order = [n for n in names.split(",") if n]
        if sorted(order) != sorted(config.targets):
            raise ImportError_(f"--torch_projectors={names!r} must name each of the config's targets "
                               f"{sorted(config.targets)} once")
        return order
    return ([n for n, t in config.targets.items() if not t.pooled] +
            [n for n, t in config.targets.items() if t.pooled])


def convert_for(config, state_dict: dict, projectors: str | None = None) -> dict:
    """Params for `config`'s model from a reference state dict, shape-checked."""
    segments = sit.block_segments(config.model.depth, targets_lib.from_config(config)) if config.model.scan else None
    has_proj = any(k.removeprefix("module.").startswith("projectors.") for k in state_dict)
    if config.targets and not has_proj:
        raise ImportError_(f"the config has targets {list(config.targets)} but the checkpoint has no projectors; "
                           f"use a config without targets to sample or evaluate it")
    params = convert_sit.from_torch(state_dict, target_names=projector_order(config, projectors),
                                    drop_projectors=not config.targets, in_channels=config.data.image_shape[-1],
                                    scan_segments=segments)
    want = jax.eval_shape(lambda: train.init_state(config, train.build_model(config),
                                                   train.make_optimizer(config))).params
    have_paths = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    for p, v in jax.tree_util.tree_flatten_with_path(want)[0]:
        name = jax.tree_util.keystr(p)
        if name not in have_paths:
            raise ImportError_(f"the checkpoint has no weights for {name} of the config's model")
        if have_paths[name] != v.shape:
            raise ImportError_(f"{name}: checkpoint shape {have_paths[name]} != config shape {v.shape} "
                               f"(check model.{{depth,hidden,heads,patch_size}}, data.image_shape, data.num_classes, "
                               f"targets.*.dim)")
    extra = set(have_paths) - {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(want)[0]}
    if extra:
        raise ImportError_(f"the checkpoint has weights the config's model lacks: {sorted(extra)[:5]}")
    return params


def import_checkpoint(config, workdir: str, path: str, key: str | None = None, step: int = 0,
                      projectors: str | None = None, log=print) -> int:
    """Write `path` as an orbax checkpoint at `step` in `workdir`; returns the step. Holds the
    workdir's lock (`reed_jax.lock`): it never writes beside a running trainer."""
    from reed_jax import lock

    with lock.WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _import(config, workdir, path, key, step, projectors, log)


def _import(config, workdir, path, key, step, projectors, log) -> int:
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    if mngr.latest_step() is not None:
        raise checkpoint.CheckpointMismatch(f"workdir {workdir!r} already holds checkpoints (latest step "
                                            f"{mngr.latest_step()}); import into an empty --workdir")
    sd, used = read_state_dict(path, key)
    params = jax.tree.map(jnp.asarray, convert_for(config, sd, projectors))
    tx = train.make_optimizer(config)
    base = train.init_state(config, train.build_model(config), tx)
    state = base.replace(step=jnp.asarray(step, jnp.int32), params=params,
                         ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))
    checkpoint.save(mngr, step, state, {"signature": train.signature(config), "data_iterator": None,
                                        "imported_from": path, "torch_key": used})
    mngr.wait_until_finished()
    n = sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(params))
    log(f"imported {path} [{used}] ({n / 1e6:.2f}M params) as step {step} in {mngr.directory}")
    return step
