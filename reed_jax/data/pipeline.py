"""grain input pipeline over the ArrayRecord shards written by `records`.

Shuffled, repeated, batched, deterministic by seed; each process reads its own slice of the
indices (`shard_index`, `shard_count`). The iterator state (`it.get_state()`) is checkpointed with
the train state so a resumed run continues with the very next batch.
"""
from __future__ import annotations

import grain
import numpy as np

from reed_jax.data import records


def open_split(data_dir: str, split: str, checksums: str = "off") -> records.ShardSource:
    """The decoded records of `split` (a grain data source). Shard sizes and per-file record counts
    are checked against the manifest; sha256 per `checksums` (see records.split_files: the trainer's
    start-up check hashes, so loaders default to 'off')."""
    schema, manifest = records.read_manifest(data_dir)
    paths, _ = records.split_files(data_dir, manifest, split, checksums)
    counts = [r["count"] for r in manifest["shards"] if r["split"] == split]
    return records.ShardSource(paths, schema, counts)


def make_loader(data_dir: str, split: str, batch_size: int, *, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                drop_remainder: bool = True, checksums: str = "off") -> grain.DataLoader:
    """A grain DataLoader yielding `{field: [batch_size, ...]}` numpy batches (per process)."""
    source = open_split(data_dir, split, checksums)
    count = len(source)
    if drop_remainder and count // shard_count < batch_size:
        raise records.DataError(f"split {split!r} in {data_dir!r} has {count} records, fewer than one "
                                f"batch of {batch_size} per process")
    sampler = grain.samplers.IndexSampler(
        num_records=count, shuffle=shuffle, seed=seed, num_epochs=num_epochs,
        shard_options=grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=True))
    ops = [grain.transforms.Batch(batch_size, drop_remainder=drop_remainder)]
    return grain.DataLoader(data_source=source, sampler=sampler, operations=ops, worker_count=0)


def read_all(data_dir: str, split: str, fields: list[str] | None = None,
             checksums: str = "auto") -> dict[str, np.ndarray]:
    """Every record of a split, in file order, as stacked arrays (for small evaluation sets)."""
    source = open_split(data_dir, split, checksums)
    rows = [source[i] for i in range(len(source))]
    names = fields or source.schema.names
    return {k: np.stack([r[k] for r in rows]) for k in names}


def pad_batches(d: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Stacked examples {field: [N, ...]} -> fixed-size batches, the last padded with all-zero examples
    (zero mask: empty), so one compiled shape serves them all."""
    n = len(next(iter(d.values())))
    out = []
    for i in range(0, n, batch_size):
        b = {k: v[i:i + batch_size] for k, v in d.items()}
        pad = batch_size - min(batch_size, n - i)
        if pad:
            b = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in b.items()}
        out.append(b)
    return out
