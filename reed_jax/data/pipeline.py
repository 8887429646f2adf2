"""grain input pipeline over the ArrayRecord shards written by `records`.

Shuffled, repeated, batched, deterministic by seed; each process reads its own slice of the
indices (`shard_index`, `shard_count`). The iterator state (`it.get_state()`) is checkpointed with
the train state so a resumed run continues with the very next batch.

Training batches come from `GlobalBatches` (the same global batches for any number of processes,
so a checkpoint resumes on another process count); `make_loader` (grain's DataLoader, per-process
index shards) serves evaluation and tools.
"""
from __future__ import annotations

import json

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
                drop_remainder: bool = True, checksums: str = "off", worker_count: int = 0) -> grain.DataLoader:
    """A grain DataLoader yielding `{field: [batch_size, ...]}` numpy batches (per process).
    `worker_count` > 0 reads and batches in that many grain worker processes (absl flags must be
    parsed first; see PROTOCOLS.md)."""
    source = open_split(data_dir, split, checksums)
    count = len(source)
    if drop_remainder and count // shard_count < batch_size:
        raise records.DataError(f"split {split!r} in {data_dir!r} has {count} records, fewer than one "
                                f"batch of {batch_size} per process")
    sampler = grain.samplers.IndexSampler(
        num_records=count, shuffle=shuffle, seed=seed, num_epochs=num_epochs,
        shard_options=grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=True))
    ops = [grain.transforms.Batch(batch_size, drop_remainder=drop_remainder)]
    return grain.DataLoader(data_source=source, sampler=sampler, operations=ops, worker_count=worker_count)


def read_all(data_dir: str, split: str, fields: list[str] | None = None,
             checksums: str = "auto") -> dict[str, np.ndarray]:
    """Every record of a split, in file order, as stacked arrays (for small evaluation sets)."""
    source = open_split(data_dir, split, checksums)
    batch = source.read_batch(range(len(source)))  # decoded straight into the stacked arrays
    return {k: batch[k] for k in (fields or source.schema.names)}


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


class GlobalBatches:
    """This process's slice of each global training batch; the order depends only on the seed.

    Global batch k of epoch e is records `perm_e[i * G:(i + 1) * G]` (i = k mod batches per epoch,
    `perm_e` a permutation drawn from `default_rng([seed, e])`, the last partial batch dropped);
    process p of P takes the p-th of its P equal parts. So every process count trains on the same
    global batches in the same order (a run moves between 1 and N hosts and resumes), each process
    reads only its own records (disjoint slices), and the state is just the number of global
    batches drawn. An iterator with get_state/set_state (bytes), as the trainer checkpoints it.
    A ShardSource's records are read and decoded straight into the batch arrays, by `read_threads`
    threads (1: no gain measured on a 2-core machine; more for a host feeding several chips, see
    docs/benchmarks_performance.md).
    """

    def __init__(self, source, global_batch: int, *, seed: int, shard_index: int = 0, shard_count: int = 1,
                 read_threads: int = 1):
        n = len(source)
        if global_batch % shard_count:
            raise records.DataError(f"global batch {global_batch} does not split over {shard_count} processes")
        if n < global_batch:
            raise records.DataError(f"{n} records are fewer than one global batch of {global_batch}")
        self.source, self.n, self.global_batch, self.seed = source, n, global_batch, seed
        self.shard_index, self.shard_count = shard_index, shard_count
        self.read_threads = read_threads  # threads reading a ShardSource batch (any number: the same batch)
        self.per_epoch, self.k, self._perm = n // global_batch, 0, (None, None)

    def __iter__(self):
        return self

    def indices(self, k: int) -> np.ndarray:
        """Record indices of this process's part of global batch `k`."""
        epoch, i = divmod(k, self.per_epoch)
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        batch = self._perm[1][i * self.global_batch:(i + 1) * self.global_batch]
        per = self.global_batch // self.shard_count
        return batch[self.shard_index * per:(self.shard_index + 1) * per]

    def __next__(self) -> dict[str, np.ndarray]:
        idx = self.indices(self.k)
        if hasattr(self.source, "read_batch"):  # ShardSource: records decoded straight into the batch
            batch = self.source.read_batch(idx, self.read_threads)
        else:
            rows = [self.source[int(i)] for i in idx]
            batch = {f: np.stack([r[f] for r in rows]) for f in rows[0]}
        self.k += 1
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"global_batches": self.k, "records": self.n, "global_batch": self.global_batch,
                           "seed": self.seed}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        if "global_batches" not in s:
            raise records.DataError(f"data-iterator state {sorted(s)} is not a GlobalBatches state")
        if s["records"] != self.n or s["seed"] != self.seed:
            raise records.DataError(f"data-iterator state was saved over {s['records']} records with seed {s['seed']}; "
                                    f"this run has {self.n} records and seed {self.seed}")
        self.k = int(s["global_batches"])

    def skip_to(self, k: int) -> None:
        """Continue at global batch `k` (a checkpoint whose iterator state is another loader's)."""
        self.k = int(k)
