"""orbax checkpoints of the train state, with run metadata and the data-iterator state.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`. `state` is the train-state pytree (params,
EMA, optimizer state, step, rng); `meta` is JSON: the model signature (what must match to resume)
and the grain iterator state. orbax commits atomically, so a half-written step is never `latest`.
A workdir whose checkpoints hold a different model is refused, never overwritten.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

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


def check_signature(mngr: ocp.CheckpointManager, signature: Mapping, workdir: str) -> None:
    """Refuse to train into a workdir whose latest checkpoint holds a different model."""
    meta = read_meta(mngr)
    if meta is None:
        return
    have = meta.get("signature", {})
    want = json.loads(json.dumps(dict(signature)))  # normalise tuples -> lists
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise CheckpointMismatch(
            f"workdir {workdir!r} holds checkpoints of a different model (differs in {diff}: "
            f"checkpoint {[have.get(k) for k in diff]} vs config {[want.get(k) for k in diff]}); "
            f"use another --workdir, it will not be overwritten")
