"""Size-bucketed batches: variable-size examples (protein chains, molecules) cropped to a few lengths.

Shards store every example padded to the largest size `L` (one schema). Given bucket lengths
`(l_1 < ... < l_n = L)`, each record belongs to the smallest bucket that holds its length (the last
valid position + 1, from a mask field or the manifest's `lengths`); every batch is drawn from one
bucket and its per-position fields are cropped to that bucket's length (`crop_fields`: names, each
cropped on its first axis, or {name: number of leading axes}, e.g. a molecule's bonds [N, N]: 2). A jitted step then compiles
once per bucket (n shapes in all) and short examples stop paying for the padding of long ones.

Deterministic and resumable without grain state: at step s the bucket is drawn from
`default_rng([seed, s])` with probability proportional to its number of full batches, and a bucket's
k-th batch is slice k of epoch-wise permutations `default_rng([seed, bucket, epoch])`. The iterator
state is (step, batches drawn per bucket): JSON bytes, the interface of grain's iterator
(`get_state()` / `set_state()`), so the trainer checkpoints either the same way. Each process takes
its own interleaved slice of every bucket's permutation (`shard_index` of `shard_count`).

Buckets with fewer records than one global batch are merged into the next larger one.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from reed_jax.data import records


def lengths_of(mask: np.ndarray) -> np.ndarray:
    """[N, L] validity mask -> [N] int64 lengths: last valid position + 1 (0 for an empty row)."""
    valid = np.asarray(mask) > 0
    last = valid.shape[1] - np.argmax(valid[:, ::-1], axis=1)
    return np.where(valid.any(axis=1), last, 0).astype(np.int64)


def assign(lengths: np.ndarray, buckets: Sequence[int], min_count: int) -> tuple[list[int], list[np.ndarray]]:
    """Record indices per bucket: smallest bucket >= length; buckets with fewer than `min_count`
    records fold into the next larger one (the last keeps whatever is left). Returns the kept bucket
    lengths and their index arrays (ascending)."""
    buckets = sorted(int(b) for b in buckets)
    lengths = np.asarray(lengths)
    if lengths.size and lengths.max() > buckets[-1]:
        raise records.DataError(f"an example of length {int(lengths.max())} exceeds the largest bucket {buckets[-1]}")
    which = np.searchsorted(np.asarray(buckets), lengths, side="left")
    kept, groups, carry = [], [], np.zeros((0,), np.int64)
    for bi, b in enumerate(buckets):
        idx = np.concatenate([carry, np.nonzero(which == bi)[0]])
        if len(idx) >= min_count or bi == len(buckets) - 1:
            if len(idx):
                kept.append(b)
                groups.append(np.sort(idx))
            carry = np.zeros((0,), np.int64)
        else:
            carry = idx
    if groups and len(groups[-1]) < min_count:  # the largest bucket alone is too small: fold it down
        if len(groups) > 1:
            last, length = groups.pop(), kept.pop()
            groups[-1], kept[-1] = np.sort(np.concatenate([groups[-1], last])), length
    if not groups or len(groups[-1]) < min_count:
        raise records.DataError(f"{len(lengths)} records cannot fill one batch of {min_count}")
    return kept, groups


def crop_axes(crop_fields: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """{field: number of leading axes cropped}: a plain list crops each field's first axis."""
    return dict(crop_fields) if isinstance(crop_fields, Mapping) else {f: 1 for f in crop_fields}


class BucketIterator:
    """Infinite iterator of `{field: [batch, ...]}` numpy batches, one bucket per batch. `source[i]`
    is record i decoded ({field: array}, e.g. a records.ShardSource)."""

    def __init__(self, source, schema: records.Schema, lengths: np.ndarray, buckets: Sequence[int],
                 crop_fields: Sequence[str] | Mapping[str, int], batch_size: int, *, seed: int, shard_index: int = 0,
                 shard_count: int = 1):
        self.source, self.schema, self.batch_size, self.seed = source, schema, batch_size, seed
        self.crop_fields = crop_axes(crop_fields)
        self.shard_index, self.shard_count = shard_index, shard_count
        self.buckets, self.groups = assign(lengths, buckets, batch_size * shard_count)
        per_epoch = np.array([len(g) // (batch_size * shard_count) for g in self.groups])
        self.per_epoch = per_epoch
        self.p = per_epoch / per_epoch.sum()
        self.step, self.drawn = 0, [0] * len(self.groups)

    def __iter__(self):
        return self

    def _indices(self, b: int, k: int) -> np.ndarray:
        epoch, i = divmod(k, int(self.per_epoch[b]))
        perm = self.groups[b][np.random.default_rng([self.seed, b, epoch]).permutation(len(self.groups[b]))]
        g = self.batch_size * self.shard_count
        return perm[i * g:(i + 1) * g][self.shard_index::self.shard_count]

    def __next__(self) -> dict[str, np.ndarray]:
        b = int(np.random.default_rng([self.seed, self.step]).choice(len(self.groups), p=self.p))
        idx = self._indices(b, self.drawn[b])
        self.step += 1
        self.drawn[b] += 1
        rows = [self.source[int(i)] for i in idx]  # decoded records (records.ShardSource names bad ones)
        length = self.buckets[b]
        crop = lambda k, a: a[(slice(0, length),) * self.crop_fields[k]] if k in self.crop_fields else a
        return {k: np.stack([crop(k, r[k]) for r in rows]) for k in self.schema.names}

    def get_state(self) -> bytes:
        return json.dumps({"step": self.step, "drawn": self.drawn, "buckets": self.buckets}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        if s.get("buckets") != self.buckets:
            raise records.DataError(f"data-iterator state was saved with buckets {s.get('buckets')}; this run has "
                                    f"{self.buckets} (same data and length_buckets are needed to resume)")
        self.step, self.drawn = int(s["step"]), [int(d) for d in s["drawn"]]


def make_loader(data_dir: str, split: str, batch_size: int, buckets: Sequence[int],
                crop_fields: Sequence[str] | Mapping[str, int],
                *, seed: int, mask_field: str = "mask", shard_index: int = 0, shard_count: int = 1,
                log=print) -> BucketIterator:
    """A BucketIterator over `split` of a shard directory. Lengths come from the manifest's
    `lengths[split]` when present, else from one pass over `mask_field`."""
    schema, manifest = records.read_manifest(data_dir)
    paths, count = records.split_files(data_dir, manifest, split)
    for f, axes in crop_axes(crop_fields).items():
        if schema.field(f).shape[:axes] != (max(buckets),) * axes:
            raise records.DataError(f"field {f!r} in {data_dir!r} has shape {schema.field(f).shape}; bucketing "
                                    f"crops its first {axes} axes, which must be the largest bucket {max(buckets)}")
    counts = [r["count"] for r in manifest["shards"] if r["split"] == split]
    source = records.ShardSource(paths, schema, counts)
    lengths = manifest.get("lengths", {}).get(split)
    if lengths is None or len(lengths) != count:
        lengths = lengths_of(np.stack([source[i][mask_field] for i in range(len(source))]))
    it = BucketIterator(source, schema, np.asarray(lengths), buckets, crop_fields, batch_size, seed=seed,
                        shard_index=shard_index, shard_count=shard_count)
    log(f"length buckets {it.buckets} with {[len(g) for g in it.groups]} {split} records")
    return it
