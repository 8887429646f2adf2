"""orbax checkpoints of the train state, with run metadata and the data-iterator state.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`. `state` is the train-state pytree (params,
EMA, optimizer state, step, rng); `meta` is JSON: the model signature (what must match to resume)
and the grain iterator state. orbax commits atomically, so a half-written step is never `latest`.
A workdir whose checkpoints hold a different model is refused, never overwritten.

Restoring (`restore_good`) verifies what it read: every array of the state finite and the stored
step equal to the checkpoint's. A checkpoint that fails (flipped bytes, truncated or missing
files) is moved aside to `<workdir>/checkpoints_skipped/<step>` (kept, never deleted), the reason
is logged, and the next older one is tried. `meta` also holds the run's config, so a resumed run
can name every key that changed.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class CheckpointMismatch(ValueError):
    """The workdir holds checkpoints of another model."""


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: Mapping, force: bool = False) -> None:
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))),
              force=force)


def read_meta(mngr: ocp.CheckpointManager, step: int | None = None) -> dict | None:
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """(state, meta) at `step` (default latest) restored into the structure/sharding of `abstract_state`."""
    step = mngr.latest_step() if step is None else step
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                      meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])


class CheckpointSaveError(RuntimeError):
    """An asynchronous checkpoint save failed (disk full, directory gone or read-only)."""


class NoGoodCheckpoint(RuntimeError):
    """Every checkpoint in the workdir failed verification."""


def check_writable(mngr: ocp.CheckpointManager) -> None:
    """Fail now, naming the directory, if checkpoints cannot be written there (read-only, no space
    for even a small file), rather than at the first save one interval later."""
    d = str(mngr.directory)
    probe = os.path.join(d, f".write_probe{os.getpid()}")
    try:
        os.makedirs(d, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        os.remove(probe)
    except OSError as e:
        raise OSError(f"checkpoint directory {d} is not writable ({e.strerror or e}); fix it or use another "
                      f"--workdir") from None


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def verify_state(state: Any, step: int) -> str | None:
    """Why `state` restored from checkpoint `step` cannot be trusted, or None when it can."""
    if not bool(_all_finite(state)):
        return "it holds non-finite values (NaN/inf): corrupt bytes"
    stored = getattr(state, "step", None)
    if stored is not None and int(stored) != step:
        return f"its state says step {int(stored)}"
    return None


def _move(src: str, dst: str) -> None:
    if jax.process_index() == 0 and os.path.exists(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)


def restore_good(mngr: ocp.CheckpointManager, abstract_state: Any, log: Callable = print) -> tuple[Any, dict] | None:
    """(state, meta) of the newest checkpoint that restores and verifies, or None without any.

    A checkpoint that fails to restore or verify is moved aside to `checkpoints_skipped/` and logged
    with its reason; the next older one is tried. When every checkpoint fails, none is moved (a
    systematic failure is likelier than all of them corrupt) and `NoGoodCheckpoint` lists the reasons.
    """
    root = str(mngr.directory).rstrip("/")
    skipped_root = os.path.join(os.path.dirname(root), "checkpoints_skipped")
    moved: list[tuple[str, str, str]] = []  # (src, dst, reason)
    while (step := mngr.latest_step()) is not None:
        try:
            state, meta = restore(mngr, abstract_state, step)
            why = verify_state(state, step)
        except Exception as e:  # noqa: BLE001  (any read/decode failure: fall back)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            why = f"it does not restore ({type(e).__name__}: {first[:300]})"
        if why is None:
            return state, meta
        src = os.path.join(root, str(step))
        dst = os.path.join(skipped_root, f"{step}.{time.strftime('%Y%m%d-%H%M%S')}")
        _move(src, dst)
        mngr.reload()
        moved.append((src, dst, f"step {step}: {why}"))
        log(f"checkpoint step {step} in {root} is unusable: {why}; moved to {dst}; trying the next older one")
    if moved:
        for src, dst, _ in moved:
            _move(dst, src)
        mngr.reload()
        raise NoGoodCheckpoint(f"no usable checkpoint in {root} (all left in place): "
                               + "; ".join(r for *_, r in moved))
    return None


def config_changes(old: Mapping, new: Mapping, prefix: str = "") -> dict[str, tuple]:
    """{dotted key: (old value, new value)} for every key whose value differs between two config dicts."""
    out = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update(config_changes(a, b, f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = (a, b)
    return out


def check_signature(mngr: ocp.CheckpointManager, signature: Mapping, workdir: str) -> None:
    """Refuse to train into a workdir whose latest checkpoint holds a different model."""
    try:
        meta = read_meta(mngr)
    except Exception:  # noqa: BLE001  (unreadable: restore_good moves it aside and checks the next)
        return
    if meta is not None:
        check_meta_signature(meta, signature, workdir)


def check_meta_signature(meta: Mapping, signature: Mapping, workdir: str) -> None:
    """Refuse a checkpoint whose meta holds another model's signature, naming the differing keys."""
    have = meta.get("signature", {})
    want = json.loads(json.dumps(dict(signature)))  # normalise tuples -> lists
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise CheckpointMismatch(
            f"workdir {workdir!r} holds checkpoints of a different model (differs in {diff}: "
            f"checkpoint {[have.get(k) for k in diff]} vs config {[want.get(k) for k in diff]}); "
            f"use another --workdir, it will not be overwritten")
