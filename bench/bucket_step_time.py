"""What length buckets buy: train-step time per bucket length on real shards, and the expected
time per step of a run with buckets against one padding every batch to the largest length.

    python bench/bucket_step_time.py --config=configs/protein_demo.py --workdir=workdir/protein \\
        --buckets=112,144,176
    python bench/bucket_step_time.py --config=configs/molecule_demo.py --workdir=workdir/molecule \\
        --buckets=16,22,29

Needs the config's shards (`--mode=precompute` first). For each bucket: the median over
`--windows` windows of `--steps` steps (compilation excluded, `block_until_ready`) of the shared
train step on batches cropped to that bucket; then the mix of buckets the bucketed iterator draws
(proportional to full batches per bucket) and the resulting mean step time vs the largest bucket.
"""
from __future__ import annotations

import importlib.util
import time

import jax
import numpy as np

from reed_jax import benchmark, config as config_lib, train
from reed_jax.data import precompute


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    mod = importlib.util.spec_from_file_location("cfg", path)
    m = importlib.util.module_from_spec(mod)
    mod.loader.exec_module(m)
    return m.get_config(arg) if arg else m.get_config()


def main(argv=None) -> dict:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--buckets", required=True, help="comma-separated lengths, the last = the config's maximum")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--windows", type=int, default=3)
    args = ap.parse_args(argv)
    c = load_config(args.config)
    sizes = tuple(int(b) for b in args.buckets.split(","))
    key = "length_buckets" if c.track == "protein" else "size_buckets"
    getattr(c, c.track).update({key: sizes})
    config_lib.validate(c)
    data_dir = precompute.data_dir(c, args.workdir)
    it = train.train_iterator(c, data_dir, lambda *_: None)
    model, tx = train.build_model(c), train.make_optimizer(c)
    step = train.make_train_step(c, model, tx)
    state = train.init_state(c, model, tx)
    inner = getattr(it, "inner", it)
    per_bucket = {}
    for _ in range(200):  # one batch of each bucket
        b = next(it)
        n = b["mask"].shape[1]
        per_bucket.setdefault(n, {k: v for k, v in b.items() if k != "index"})
        if len(per_bucket) == len(inner.buckets):
            break
    times = {}
    for n in sorted(per_bucket):
        batch = per_bucket[n]
        state, m = step(state, batch)  # compile
        jax.block_until_ready(m)
        ws = []
        for _ in range(args.windows):
            t = time.perf_counter()
            for _ in range(args.steps):
                state, m = step(state, batch)
            jax.block_until_ready(m)
            ws.append((time.perf_counter() - t) / args.steps)
        times[n] = float(np.median(ws))
        print(f"bucket {n:4d}: {1000 * times[n]:8.1f} ms/step", flush=True)
    p = dict(zip(inner.buckets, inner.p))
    mean = sum(p[n] * times[n] for n in times)
    top = times[max(times)]
    print(f"bucket mix {({n: round(float(v), 3) for n, v in p.items()})}: {1000 * mean:.1f} ms/step expected vs "
          f"{1000 * top:.1f} ms/step all at {max(times)} -> {top / mean:.2f}x", flush=True)
    return {"ms_per_step": {n: 1000 * t for n, t in times.items()}, "mix": p, "speedup": top / mean}


if __name__ == "__main__":
    main()
