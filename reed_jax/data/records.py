"""Shard schema, record encoding and the manifest.

A record is one example: the concatenation of each field's raw little-endian bytes in schema
order (no pickle, no TensorFlow). The schema (names, shapes, dtypes, version) is stored beside the
shards in `schema.json`; `manifest.json` lists every shard file with its record count, byte size and sha256.
Corrupt shards are named before compute: `split_files` checks every shard's size against the manifest
(always; cheap) and its sha256 when asked (`data.verify_checksums`), and `ShardSource` names the
shard file and record index of any record it cannot read or decode.
Field names: `image` [H, W, C] float32 pixels in [-1, 1], or `moments` [H, W, 2C] VAE posterior
(mean, std); `label` [] int32; `index` [] int64; `target/<name>` [T, D] or [D] frozen features.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 1
SCHEMA_FILE = "schema.json"
MANIFEST_FILE = "manifest.json"
TARGET_PREFIX = "target/"
CHECKSUM_MODES = ("auto", "on", "off")  # data.verify_checksums
AUTO_CHECKSUM_BYTES = 2 << 30  # 'auto' hashes a split whose shards total at most this (2 GiB: a few s)
# ArrayRecord writer options: one record per chunk (random access reads one record), zstd level 1:
# the size of the library's default (brotli) on bf16 tokens, decompressed ~2x faster (the reader's
# bottleneck; bench/input_pipeline.py). Any compression reads back the same records.
WRITER_OPTIONS = "group_size:1,zstd:1"


class DataError(ValueError):
    """Bad or missing shards; the message names the file, field or shape."""


def np_dtype(name: str) -> np.dtype:
    """numpy dtype of a schema dtype name, `bfloat16` included (ml_dtypes, as jax uses)."""
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np_dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]
    version: int = SCHEMA_VERSION

    @functools.cached_property
    def record_bytes(self) -> int:
        return sum(f.nbytes for f in self.fields)

    @functools.cached_property
    def layout(self) -> tuple[tuple[str, np.dtype, np.dtype, int, int, tuple[int, ...]], ...]:
        """Per field (name, little-endian dtype, native dtype, element count, byte offset, shape),
        computed once per schema (decoding is per record: no per-record shape arithmetic)."""
        out, off = [], 0
        for f in self.fields:
            native = np_dtype(f.dtype)
            out.append((f.name, native.newbyteorder("<"), native, f.nbytes // native.itemsize, off, tuple(f.shape)))
            off += f.nbytes
        return tuple(out)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise DataError(f"shard schema has no field {name!r}; it has {[f.name for f in self.fields]}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_json(self) -> dict:
        return {"version": self.version,
                "fields": [{"name": f.name, "shape": list(f.shape), "dtype": f.dtype} for f in self.fields]}

    @classmethod
    def from_json(cls, d: Mapping) -> Schema:
        if d.get("version") != SCHEMA_VERSION:
            raise DataError(f"shard schema version {d.get('version')} is not supported (this code reads {SCHEMA_VERSION})")
        return cls(tuple(Field(f["name"], tuple(f["shape"]), f["dtype"]) for f in d["fields"]), d["version"])

    @classmethod
    def of(cls, example: Mapping[str, np.ndarray]) -> Schema:
        """Schema from one example (field order = dict order)."""
        return cls(tuple(Field(k, tuple(np.shape(v)), np.asarray(v).dtype.name)
                         for k, v in example.items()))


def encode(schema: Schema, example: Mapping[str, np.ndarray]) -> bytes:
    """One example -> bytes. Every schema field must be present with its shape; dtype is cast."""
    parts = []
    for f in schema.fields:
        if f.name not in example:
            raise DataError(f"example is missing field {f.name!r}")
        a = np.asarray(example[f.name])
        if a.shape != f.shape:
            raise DataError(f"field {f.name!r}: shape {a.shape} does not match schema {f.shape}")
        parts.append(np.ascontiguousarray(a, dtype=np_dtype(f.dtype).newbyteorder("<")).tobytes())
    return b"".join(parts)


def decode(schema: Schema, record: bytes) -> dict[str, np.ndarray]:
    """bytes -> {name: array} (copies, so arrays are writable and own their memory)."""
    if len(record) != schema.record_bytes:
        raise DataError(f"record of {len(record)} bytes does not match the schema's {schema.record_bytes}")
    return {name: np.frombuffer(record, le, count=n, offset=off).reshape(shape).astype(native)
            for name, le, native, n, off, shape in schema.layout}


def decode_batch(schema: Schema, raws: Sequence[bytes]) -> dict[str, np.ndarray]:
    """[bytes] -> {name: [len(raws), ...]}: what stacking `decode` of each record gives, with each
    record's bytes copied once, straight into its row of the batch arrays (no per-record arrays).
    A record of the wrong length raises DataError naming its position in `raws`."""
    out = empty_batch(schema, len(raws))
    for j, raw in enumerate(raws):
        if len(raw) != schema.record_bytes:
            raise DataError(f"record {j} of the batch has {len(raw)} bytes, the schema's records {schema.record_bytes}")
        decode_into(schema, raw, out, j)
    return out


def empty_batch(schema: Schema, n: int) -> dict[str, np.ndarray]:
    """{name: uninitialised [n, ...] array} of the schema's fields (what `decode_into` fills)."""
    return {name: np.empty((n,) + shape, native) for name, _, native, _, _, shape in schema.layout}


def decode_into(schema: Schema, record: bytes, out: Mapping[str, np.ndarray], row: int) -> None:
    """Decode one record (its length already checked) into row `row` of the batch arrays `out`."""
    for name, le, _, count, off, shape in schema.layout:
        out[name][row] = np.frombuffer(record, le, count=count, offset=off).reshape(shape)


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.array_record"


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_row(out_dir: str, name: str, split: str, count: int) -> dict:
    """The manifest entry of a finished shard file (record count, size in bytes, sha256)."""
    path = os.path.join(out_dir, name)
    return {"file": name, "split": split, "count": int(count), "bytes": os.path.getsize(path),
            "sha256": file_sha256(path)}


def write_shard(out_dir: str, name: str, schema: Schema, examples: Iterable[Mapping[str, np.ndarray]],
                on_write=None, options: str = WRITER_OPTIONS) -> int:
    """Write `examples` into `<out_dir>/<name>` under a temporary name, renamed when complete (a
    half-written shard never has the final name). `options`: ArrayRecord writer options. Returns
    the record count."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = os.path.join(out_dir, name)
    w = ArrayRecordWriter(path + ".tmp", options)
    n = 0
    for ex in examples:
        w.write(encode(schema, ex))
        n += 1
        if on_write is not None:
            on_write()
    w.close()
    os.replace(path + ".tmp", path)
    return n


def write_split(out_dir: str, split: str, schema: Schema, examples: Sequence[Mapping[str, np.ndarray]],
                num_shards: int) -> list[dict]:
    """Write `examples` into `num_shards` ArrayRecord files (contiguous ranges). Each shard is written
    under a temporary name and renamed when complete. Returns manifest rows."""
    os.makedirs(out_dir, exist_ok=True)
    bounds = np.linspace(0, len(examples), num_shards + 1).astype(int)
    rows = []
    for i in range(num_shards):
        name = shard_name(split, i, num_shards)
        count = write_shard(out_dir, name, schema, (examples[j] for j in range(bounds[i], bounds[i + 1])))
        rows.append(manifest_row(out_dir, name, split, count))
    return rows


def write_manifest(out_dir: str, schema: Schema, rows: list[dict], extra: Mapping | None = None) -> None:
    with open(os.path.join(out_dir, SCHEMA_FILE), "w") as fh:
        json.dump(schema.to_json(), fh, indent=1)
    manifest = {"schema_version": schema.version, "shards": rows, **(extra or {})}
    tmp = os.path.join(out_dir, MANIFEST_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, os.path.join(out_dir, MANIFEST_FILE))


def read_manifest(data_dir: str) -> tuple[Schema, dict]:
    """(schema, manifest) of a shard directory, with errors that name the missing file."""
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"shard directory {data_dir!r} does not exist (run --mode=precompute first)")
    for f in (SCHEMA_FILE, MANIFEST_FILE):
        if not os.path.exists(os.path.join(data_dir, f)):
            raise DataError(f"shard directory {data_dir!r} has no {f} (run --mode=precompute first)")
    with open(os.path.join(data_dir, SCHEMA_FILE)) as fh:
        schema = Schema.from_json(json.load(fh))
    with open(os.path.join(data_dir, MANIFEST_FILE)) as fh:
        manifest = json.load(fh)
    return schema, manifest


def matching_shards(out_dir: str, schema: Schema, counts: Mapping[str, int]) -> bool:
    """Before writing shards: False if `out_dir` holds none, True if it holds exactly these (schema and
    record count per split: keep them), else DataError (existing shards are never overwritten)."""
    if not os.path.exists(os.path.join(out_dir, MANIFEST_FILE)):
        return False
    have, manifest = read_manifest(out_dir)
    have_counts = {s: sum(r["count"] for r in manifest["shards"] if r["split"] == s) for s in counts}
    if have == schema and have_counts == dict(counts):
        return True
    raise DataError(f"{out_dir} already holds different shards (schema or counts differ); remove them or set "
                    f"data.dir elsewhere: they are not overwritten")


def split_files(data_dir: str, manifest: Mapping, split: str, checksums: str = "auto") -> tuple[list[str], int]:
    """Paths and total record count of `split`; DataError naming a missing, empty, wrong-sized or
    (when hashed) wrong-checksum shard file.

    Every shard's size is checked against the manifest's `bytes` (manifests written before sizes
    were recorded have none: not checked). `checksums` (data.verify_checksums): 'on' hashes every
    shard of the split (sha256 against the manifest), 'off' never, 'auto' when the split's shards
    total at most AUTO_CHECKSUM_BYTES.
    """
    if checksums not in CHECKSUM_MODES:
        raise DataError(f"data.verify_checksums={checksums!r} must be one of {CHECKSUM_MODES}")
    rows = [r for r in manifest["shards"] if r["split"] == split]
    if not rows or sum(r["count"] for r in rows) == 0:
        raise DataError(f"shard directory {data_dir!r} has no records for split {split!r}")
    paths = []
    for r in rows:
        p = os.path.join(data_dir, r["file"])
        if not os.path.exists(p) or os.path.getsize(p) == 0:
            raise DataError(f"shard file {p} listed in {MANIFEST_FILE} is missing or empty")
        if "bytes" in r and os.path.getsize(p) != r["bytes"]:
            raise DataError(f"shard file {p} has {os.path.getsize(p)} bytes, {MANIFEST_FILE} says {r['bytes']} "
                            f"(truncated or overwritten: precompute it again)")
        paths.append(p)
    total = sum(os.path.getsize(p) for p in paths)
    if checksums == "on" or (checksums == "auto" and total <= AUTO_CHECKSUM_BYTES):
        for p, r in zip(paths, rows):
            if file_sha256(p) != r["sha256"]:
                raise DataError(f"shard file {p} does not match its sha256 in {MANIFEST_FILE} (corrupt: "
                                f"precompute it again, or set data.verify_checksums='off' to read it anyway)")
    return paths, sum(r["count"] for r in rows)


class ShardSource:
    """Random access to the decoded records of shard files, as one sequence in file order (a grain
    data source). Opening, reading or decoding errors raise DataError naming the shard file and the
    record index within it; `counts` (from the manifest) are checked per file."""

    def __init__(self, paths: Sequence[str], schema: Schema, counts: Sequence[int] | None = None):
        import grain

        self.paths, self.schema = list(paths), schema
        self._files = []
        for i, p in enumerate(self.paths):
            try:
                src = grain.sources.ArrayRecordDataSource([p])
                n = len(src)
            except Exception as e:  # riegeli: corrupt header, postscript or truncation
                raise DataError(f"shard file {p} cannot be opened as ArrayRecord ({type(e).__name__}: {e})") from e
            if counts is not None and n != counts[i]:
                raise DataError(f"shard file {p} holds {n} records, {MANIFEST_FILE} says {counts[i]}")
            self._files.append(src)
        self._ends = np.cumsum([len(f) for f in self._files]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _file(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        return bisect.bisect_right(self._ends, index)

    def locate(self, index: int) -> tuple[str, int]:
        """(shard path, record index within it) of global record `index`."""
        f = self._file(index)
        return self.paths[f], index - (self._ends[f - 1] if f else 0)

    def __getitem__(self, index) -> dict[str, np.ndarray]:
        index = int(index)
        f = self._file(index)
        path, local = self.paths[f], index - (self._ends[f - 1] if f else 0)
        try:
            raw = self._files[f][local]
        except Exception as e:
            raise DataError(f"shard file {path}: record {local} cannot be read ({type(e).__name__}: {e})") from e
        try:
            return decode(self.schema, raw)
        except Exception as e:
            raise DataError(f"shard file {path}: record {local} cannot be decoded: {e}") from e

    def read_batch(self, indices: Sequence[int], threads: int = 1) -> dict[str, np.ndarray]:
        """{name: [len(indices), ...]}: the records at `indices` read and decoded straight into batch
        arrays (equal to stacking `self[i]`), by `threads` threads each filling a contiguous run of
        rows (ArrayRecord reads and numpy copies release the GIL). Errors name the shard file and
        record index."""
        indices = [int(i) for i in indices]
        out = empty_batch(self.schema, len(indices))

        def fill(lo: int, hi: int) -> None:
            for row in range(lo, hi):
                f = self._file(indices[row])
                local = indices[row] - (self._ends[f - 1] if f else 0)
                try:
                    raw = self._files[f][local]
                except Exception as e:
                    raise DataError(f"shard file {self.paths[f]}: record {local} cannot be read "
                                    f"({type(e).__name__}: {e})") from e
                if len(raw) != self.schema.record_bytes:
                    raise DataError(f"shard file {self.paths[f]}: record {local} cannot be decoded: record of "
                                    f"{len(raw)} bytes does not match the schema's {self.schema.record_bytes}")
                decode_into(self.schema, raw, out, row)

        threads = max(1, min(int(threads), len(indices) // 8))  # >= 8 records per thread
        if threads == 1:
            fill(0, len(indices))
        else:
            from concurrent.futures import ThreadPoolExecutor

            bounds = np.linspace(0, len(indices), threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                for r in [pool.submit(fill, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]:
                    r.result()  # the first error, named
        return out

    def __repr__(self) -> str:
        """grain's ArrayRecordDataSource repr of the same paths (checkpointed iterator states stay valid)."""
        h = hashlib.sha1()
        for p in self.paths:
            h.update(p.encode())
        return f"ArrayRecordDataSource(hash_of_paths={h.hexdigest()})"


def check_targets(schema: Schema, widths: Mapping[str, tuple[int, ...]], data_dir: str) -> None:
    """Each configured target must exist in the shards with the shape the config expects."""
    for name, shape in widths.items():
        field = TARGET_PREFIX + name
        if field not in schema.names:
            raise DataError(f"targets.{name}: shards in {data_dir!r} have no field {field!r} "
                            f"(they have {[n for n in schema.names if n.startswith(TARGET_PREFIX)]})")
        have = schema.field(field).shape
        if tuple(have) != tuple(shape):
            raise DataError(f"targets.{name}: config expects features of shape {tuple(shape)} but "
                            f"field {field!r} in {data_dir!r} has shape {tuple(have)}")
