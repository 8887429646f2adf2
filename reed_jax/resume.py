"""Continuing a run from its checkpoint: which config keys changed, whether the data is the same
(by content, wherever it lies), and where the data iterator stopped."""
from __future__ import annotations

import json

from reed_jax import checkpoint, config as config_lib
from reed_jax.data import pipeline, records


def check_config_changes(config, meta: dict, log) -> None:
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
