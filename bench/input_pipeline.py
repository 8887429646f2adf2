"""Input-pipeline rate of our ArrayRecord reader at ImageNet shapes, against what one chip needs.

    .venv/bin/python bench/input_pipeline.py --records=2048 --batch=256 --windows=5 --batches=2 \\
        --dir=/tmp/reed_input_pipeline --json=workdir/perf/input_pipeline.json

Writes synthetic shards with the project's writer (`records.write_shard`, `write_manifest`) in the
two layouts the image track stores (`reed_jax/image/precompute.py`), then deletes them:
  precomputed (encoder.mode='precomputed'): moments [32, 32, 8] float32, label int32, index int64,
      target/dinov2 [256, 768] bfloat16, target/vlm [3584] float32     (440,332 B = 430 KiB/record)
  online (encoder.mode='online'): moments, label, index, pixels [256, 256, 3] uint8 (the crop the
      step encodes), target/vlm                                         (243,724 B = 238 KiB/record)
and reads them back the way training does, per window `--batches` global batches of `--batch`:
  global_batches_Nthreads pipeline.GlobalBatches(read_threads=N, default N = this process's CPUs):
                        the trainer's reader (which uses N=1): seeded shuffle, this process's
                        slice, every field decoded straight into the batch ->
                        parallel.global_batch (jax.make_array_from_process_local_data), ready on device
  global_batches_1thread  the same, read_threads=1
  global_batches_before the same with the reader as it was before this benchmark (one record at a
                        time: decode each record, then np.stack), on shards written as before
                        (`--before_writer`, brotli) and as now (zstd:1): the before/after
  grain_wN              pipeline.make_loader (grain DataLoader: IndexSampler shuffle + per-process
                        shard + Batch) with N = 0, 1, 2 worker processes -> global_batch; grain reads
                        ahead (500 records per reading process, 16 threads) while other readers run,
                        so each of its windows first drains that many batches untimed
Windows alternate over the readers (machine noise hits them alike); the shards are in the page
cache after the first window, so this is the CPU cost of reading, decoding and batching, not disk.
Prints records/s and MB/s (wall clock, median [IQR; min-max]), records per CPU-second of this
process (all its threads: the cost, robust on a loaded machine; what a host needs cores for) and
the ratio to one chip's need: SiT-XL/2 at 50%
MFU on an H100/H200 trains ~690 img/s (`--chip_rate`), i.e. ~300 MB/s of precomputed records.
"""
from __future__ import annotations

import os
import shutil
import time

import jax
import ml_collections
import numpy as np

from reed_jax import benchmark, parallel
from reed_jax.data import pipeline, records

LAYOUTS = {
    "precomputed": [("moments", (32, 32, 8), "float32"), ("label", (), "int32"), ("index", (), "int64"),
                    ("target/dinov2", (256, 768), "bfloat16"), ("target/vlm", (3584,), "float32")],
    "online": [("moments", (32, 32, 8), "float32"), ("label", (), "int32"), ("index", (), "int64"),
               ("pixels", (256, 256, 3), "uint8"), ("target/vlm", (3584,), "float32")],
}


def write_shards(out_dir: str, layout: str, n: int, shards: int, seed: int = 0,
                 options: str = records.WRITER_OPTIONS) -> records.Schema:
    """`n` synthetic records of `layout` in `shards` ArrayRecord files written with `options` (a pool
    of 8 random examples cycled, label and index distinct), with schema and manifest."""
    schema = records.Schema(tuple(records.Field(k, s, d) for k, s, d in LAYOUTS[layout]))
    rng = np.random.default_rng(seed)

    def random(f):
        if f.dtype == "uint8":
            return rng.integers(0, 256, f.shape, dtype=np.uint8)
        return rng.normal(size=f.shape).astype(records.np_dtype(f.dtype))

    pool = [{f.name: random(f) for f in schema.fields if f.name not in ("label", "index")} for _ in range(8)]
    os.makedirs(out_dir, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    rows = []
    for s in range(shards):
        name = records.shard_name("train", s, shards)
        ex = ({**pool[i % len(pool)], "label": np.int32(i % 1000), "index": np.int64(i)}
              for i in range(bounds[s], bounds[s + 1]))
        records.write_shard(out_dir, name, schema, ex, options=options)
        rows.append(records.manifest_row(out_dir, name, "train", bounds[s + 1] - bounds[s]))
    records.write_manifest(out_dir, schema, rows)
    return schema


def _decode_before(schema: records.Schema, record: bytes) -> dict:
    """records.decode as it was before this benchmark's change (field sizes recomputed per record)."""
    if len(record) != sum(f.nbytes for f in schema.fields):
        raise records.DataError("record length")
    out, off = {}, 0
    for f in schema.fields:
        dt = records.np_dtype(f.dtype).newbyteorder("<")
        out[f.name] = np.frombuffer(record, dt, count=f.nbytes // dt.itemsize, offset=off).reshape(f.shape).astype(
            records.np_dtype(f.dtype))
        off += f.nbytes
    return out


class PerRecordBatches(pipeline.GlobalBatches):
    """GlobalBatches as it read before this benchmark: one record at a time (read, decode), then np.stack."""

    def __next__(self):
        src, rows = self.source, []
        for i in self.indices(self.k):
            f = src._file(int(i))
            rows.append(_decode_before(src.schema, src._files[f][int(i) - (src._ends[f - 1] if f else 0)]))
        self.k += 1
        return {f: np.stack([r[f] for r in rows]) for f in rows[0]}


def main() -> None:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--records", type=int, default=2048, help="records per layout")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--process_count", type=int, default=1,
                    help="simulated processes: this one reads slice 0 of each global batch")
    ap.add_argument("--batches", type=int, default=2, help="batches per timed window")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--workers", default="0,1,2", help="grain worker counts")
    ap.add_argument("--layouts", default="precomputed,online")
    ap.add_argument("--before_writer", default="group_size:1",
                    help="writer options before this benchmark's change (ArrayRecord's default compression, "
                         "brotli): the precomputed layout is also written so and read the way it was read "
                         "before ('' = skip)")
    ap.add_argument("--read_threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="GlobalBatches(read_threads=...) of the threaded reader (default: this process's CPUs)")
    ap.add_argument("--chip_rate", type=float, default=690.0, help="images/s one chip trains (SiT-XL/2, 50%% MFU)")
    ap.add_argument("--dir", default="/tmp/reed_input_pipeline", help="scratch directory (deleted at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the shards")
    a = ap.parse_args()
    try:  # grain's worker processes read absl flags
        from absl import flags
        flags.FLAGS.mark_as_parsed()
    except Exception:  # noqa: BLE001
        pass
    print(benchmark.machine_line(), flush=True)
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
    local = a.batch // a.process_count
    rows = []
    try:
        sets = [(layout, records.WRITER_OPTIONS) for layout in a.layouts.split(",")]
        if a.before_writer and "precomputed" in a.layouts.split(","):
            sets.insert(1, ("precomputed", a.before_writer))
        for layout, options in sets:
            before = options != records.WRITER_OPTIONS
            d = os.path.join(a.dir, layout + ("_before" if before else ""))
            t0 = time.perf_counter()
            schema = write_shards(d, layout, a.records, a.shards, options=options)
            write_s = time.perf_counter() - t0
            rec_mb = schema.record_bytes / 1e6
            disk = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".array_record"))
            print(f"{layout} (writer {options!r}): {a.records} records x {schema.record_bytes:,} B in {a.shards} shards "
                  f"({disk / 1e9:.2f} GB on disk, {disk / (a.records * schema.record_bytes):.3f} of raw); written at "
                  f"{a.records / write_s:.0f} records/s ({a.records * rec_mb / write_s:.0f} MB/s)", flush=True)
            source = pipeline.open_split(d, "train")

            def timed(it, drain=0):
                def window():
                    for _ in range(a.batches):
                        arrays = parallel.global_batch({k: v for k, v in next(it).items()}, mesh)
                    jax.block_until_ready(arrays)

                def run():
                    for _ in range(drain):  # batches grain's workers made while other readers ran
                        next(it)
                    return benchmark.timed_window(window, a.batches * local)  # per record
                return run

            readers = {
                f"global_batches_{a.read_threads}threads": timed(pipeline.GlobalBatches(
                    source, a.batch, seed=0, shard_count=a.process_count, read_threads=a.read_threads)),
                "global_batches_1thread": timed(pipeline.GlobalBatches(source, a.batch, seed=0,
                                                                       shard_count=a.process_count, read_threads=1)),
                "global_batches_before": timed(PerRecordBatches(source, a.batch, seed=0, shard_count=a.process_count)),
            }
            loaders = []
            for w in ([] if before else (int(x) for x in a.workers.split(","))):
                loader = pipeline.make_loader(d, "train", local, seed=0, shard_count=a.process_count,
                                              worker_count=w)
                it = iter(loader)
                loaders.append(it)
                ahead = -(-500 // local) + 1  # grain's default read-ahead: 500 records per reading process
                readers[f"grain_w{w}"] = timed(it, drain=w * (ahead + 1) + 1 if w else ahead)
            for run in readers.values():  # warm-up: page cache, worker start-up
                run()
            times = benchmark.alternate(readers, a.windows)
            print(f"  per process (slice {local} of {a.batch}; {a.process_count} process(es)); chip need "
                  f"{a.chip_rate:.0f} img/s = {a.chip_rate * rec_mb:.0f} MB/s of these records", flush=True)
            for name, secs in times.items():
                rate = benchmark.spread([1.0 / t.wall for t in secs])
                mbs = benchmark.spread([rec_mb / t.wall for t in secs])
                chips = benchmark.spread([1.0 / t.wall / a.chip_rate for t in secs])
                # records per CPU-second of this process (its threads included; grain's worker
                # processes are not counted, so no per-core figure for them)
                core = None if name.startswith("grain_w") and name != "grain_w0" else benchmark.spread(
                    [1.0 / t.cpu for t in secs])
                rows.append(dict(layout=layout, writer=options, reader=name, batch=a.batch,
                                 process_count=a.process_count, record_bytes=schema.record_bytes,
                                 records_per_s=rate, mb_per_s=mbs, chips_fed=chips, records_per_cpu_s=core,
                                 write_records_per_s=a.records / write_s, windows=secs))
                per_core = ("" if core is None else f"; {benchmark.format_spread(core, '{:.0f}')} records per CPU-s "
                            f"= {core['median'] / a.chip_rate:.2f} chips per core")
                print(f"  {name:22s} wall {benchmark.format_spread(rate, '{:.0f}')} records/s, "
                      f"{mbs['median']:.0f} MB/s = {chips['median']:.2f} chips' need{per_core}", flush=True)
            if "global_batches_before" in times:
                for clock, i in (("wall", 0), ("cpu", 1)):
                    r = benchmark.paired_ratios([t[i] for t in times["global_batches_before"]],
                                                [t[i] for t in times["global_batches_1thread"]])
                    print(f"  speed-up of global_batches (1 thread) over before, {clock} time: "
                          f"{benchmark.format_spread(r, '{:.2f}')}x", flush=True)
                    rows.append(dict(layout=layout, writer=options, reader=f"speedup_1thread_{clock}", ratio=r))
            for it in loaders:
                del it
            del readers, loaders
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)
    benchmark.write_rows(a.json, rows, {"machine": benchmark.machine_line(), "args": vars(a)})


if __name__ == "__main__":
    main()
