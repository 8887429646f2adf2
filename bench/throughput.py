"""Train-step throughput and MFU of SiT + REED targets on ImageNet-shaped synthetic batches.

    python bench/throughput.py --model=XL/2 --batch=256 --dtype=bfloat16 [--fsdp=8] [--remat=dots]
    python bench/throughput.py --model=S/2,B/2 --batch=32 --windows=3 --steps=3     # CPU-sized
    python bench/throughput.py --model=XL/2 --remat=none,full --scan=0,1 --compile_only  # compile time only
    python bench/throughput.py --model=S/2,B/2 --batch=64 --remat=none,full --compile_only  # + XLA's memory

Prints, per configuration: compile time, median step time over `--windows` windows of `--steps`
steps (compilation excluded, `block_until_ready`), images/s, images/s per device, train FLOPs
per image (analytic, from the config; XLA's cost analysis beside it) and MFU against the
device's peak bf16 FLOP/s (PROTOCOLS.md; `--peak_tflops` for devices not in the table), and
XLA's memory analysis of the compiled step (temporaries and arguments per device).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np

from reed_jax import benchmark, config as config_lib, parallel, train
from reed_jax.image import (
    config as image_config,
    flops,
)


def bench_one(model: str, batch: int, dtype: str, fsdp: int, remat: str, variant: str, windows: int, steps: int,
              peak: float | None, compile_only: bool = False, scan: bool = False) -> dict:
    size, _ = model.split("/")
    c = image_config.imagenet_config(size, variant)
    c.model = image_config.sit_model(model, dtype=dtype, remat=remat, scan=scan)
    c.train.batch_size = batch
    c.mesh.update(data=-1, fsdp=fsdp)
    config_lib.validate(c, jax.device_count())
    net, tx = train.build_model(c), train.make_optimizer(c)
    mesh = parallel.make_mesh(c.mesh)
    abstract = train.abstract_state(c, net, tx)
    shardings = parallel.state_shardings(abstract, mesh, train.logical_specs(c, net))
    rng = np.random.default_rng(0)
    h, w, ch = c.data.image_shape
    local = {"moments": rng.normal(size=(batch, h, w, 2 * ch)).astype(np.float32),
             "label": rng.integers(0, 1000, batch).astype(np.int32)}
    for name, shape in image_config.target_shapes(c).items():
        local[f"target/{name}"] = rng.normal(size=(batch,) + shape).astype(np.float32)
    gbatch = parallel.global_batch(local, mesh)
    step = train.make_train_step(c, net, tx, mesh=mesh, shardings=shardings)
    t0 = time.perf_counter()
    compiled = step.lower(parallel.with_shardings(abstract, shardings), gbatch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # cost analysis counts one device's partitioned program
    xla_flops = float(cost.get("flops", float("nan"))) * jax.device_count() / batch if cost else float("nan")
    fpi = flops.train_flops_per_image(c.model, c.data.image_shape, c.targets)
    mem = compiled.memory_analysis()  # XLA's buffer assignment for one device: what the step allocates
    gb = lambda name: round(getattr(mem, name, float("nan")) / 1e9, 3) if mem is not None else None
    row = {"model": model, "variant": variant, "batch": batch, "dtype": dtype, "fsdp": fsdp, "remat": remat,
           "scan": scan, "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
           "compile_s": round(compile_s, 2), "train_gflops_per_image": fpi / 1e9,
           "xla_gflops_per_image": xla_flops / 1e9, "temp_gb": gb("temp_size_in_bytes"),
           "argument_gb": gb("argument_size_in_bytes")}
    if compile_only:
        return row
    state = train.create_state(c, net, tx, shardings)
    state, m = step(state, gbatch)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = step(state, gbatch)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t0) / steps)
    step_s = float(np.median(times))
    ips = batch / step_s
    n = jax.device_count()
    peak = peak or flops.peak_flops(jax.devices()[0].device_kind)
    return dict(row, step_s=step_s, images_per_s=ips, images_per_s_per_device=ips / n,
                mfu=(ips * fpi / (n * peak)) if peak else None)


def main():
    ap = benchmark.parser(__doc__)
    ap.add_argument("--model", default="S/2,B/2", help="comma-separated SiT sizes, e.g. S/2,B/2,L/2,XL/2")
    ap.add_argument("--variant", default="reed", choices=["sit", "repa", "reed"])
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--fsdp", default="1", help="comma-separated fsdp sizes (1 = data parallel)")
    ap.add_argument("--remat", default="none", help="comma-separated remat policies")
    ap.add_argument("--scan", default="0", help="comma-separated 0/1: nn.scan over the blocks between taps")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peak_tflops", type=float, default=None, help="peak FLOP/s per device, in TFLOP/s")
    ap.add_argument("--compile_only", action="store_true", help="compile on abstract state; print compile time")
    a = ap.parse_args()
    peak = a.peak_tflops * 1e12 if a.peak_tflops else None
    rows = []
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}")
    for model in a.model.split(","):
        for fsdp in (int(x) for x in a.fsdp.split(",")):
            for remat, scan in ((r, s) for r in a.remat.split(",") for s in a.scan.split(",")):
                scan = bool(int(scan))
                r = bench_one(model, a.batch, a.dtype, fsdp, remat, a.variant, a.windows, a.steps, peak,
                              a.compile_only, scan)
                rows.append(r)
                name = f"SiT-{model} {a.variant} batch={a.batch} {a.dtype} fsdp={fsdp} remat={remat} scan={int(scan)}"
                if a.compile_only:
                    print(f"{name}: compile "
                          f"{r['compile_s']:.1f}s, {r['train_gflops_per_image']:.1f} GFLOP/img "
                          f"(XLA {r['xla_gflops_per_image']:.1f}); per device: temporaries {r['temp_gb']} GB, "
                          f"arguments (state + batch) {r['argument_gb']} GB", flush=True)
                    continue
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (unknown peak)"
                print(f"{name}: compile {r['compile_s']:.1f}s, step {1e3 * r['step_s']:.1f} ms, "
                      f"{r['images_per_s']:.1f} img/s ({r['images_per_s_per_device']:.1f}/device), "
                      f"{r['train_gflops_per_image']:.1f} GFLOP/img (XLA {r['xla_gflops_per_image']:.1f}), MFU {mfu}",
                      flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
