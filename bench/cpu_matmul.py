"""Which XLA:CPU matmul path is faster on this CPU: YNNPACK (XLA's default for a dot whose left
operand is contracted over its last dimension: the forward `x @ w` and the activation gradient
`dy @ w.T`) or Eigen (what XLA uses for the weight gradient `x.T @ dy`, and for every dot with
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`). Shapes are a Dense layer's: x [M, K] with
M = batch x tokens, w [K, N].

    .venv/bin/python bench/cpu_matmul.py --shapes=1024x384x1536,4096x384x1536,4096x2048x2048 --threads=1

Per shape it times, in alternating windows, float32:
- `fwd`: x @ w (YNNPACK under the default flags, Eigen with YNN fusions off);
- `wgrad`: x.T @ dy as jax.grad writes it (Eigen under both);
- `wgrad_T`: the same product with x transposed in memory first (an optimization barrier keeps
  XLA from folding the transpose back), which XLA hands to YNNPACK under the default flags.
Each flag set runs in its own worker process (`--xla_variants`, ';'-separated, '' = this process's
flags), alternated with the others; it prints CPU ms per product, GFLOP/s, which library each
compiled program calls (YNNPACK when its HLO has a `__ynn_fusion`), and each variant's ratio to
the first. `--threads` pins every process to the first N CPUs (XLA sizes its pool from that).
"""
from __future__ import annotations

import json
import os
import sys

DEFAULT_VARIANTS = ";--xla_cpu_experimental_ynn_fusion_type="


def programs(m: int, k: int, n: int):
    """{name: (compiled, args)} for one shape (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(m, k)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(k, n)).astype(np.float32))
    dy = jnp.asarray(rng.normal(size=(m, n)).astype(np.float32))

    def wgrad_t(x, dy):
        return jax.lax.optimization_barrier(jnp.transpose(x)) @ dy

    fns = {"fwd": (lambda x, w: x @ w, (x, w)), "wgrad": (lambda x, dy: x.T @ dy, (x, dy)),
           "wgrad_T": (wgrad_t, (x, dy))}
    return {name: (jax.jit(f).lower(*a).compile(), a) for name, (f, a) in fns.items()}


def _worker() -> None:
    """JSON lines: {'cmd': 'setup', 'shape': [m, k, n]} compiles (answers each program's library);
    {'cmd': 'window', 'reps': r} times every program r times (CPU and wall seconds per product)."""
    import jax

    from reed_jax import benchmark

    progs = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "setup":
            progs = programs(*msg["shape"])
            out = {name: "ynnpack" if "__ynn_fusion" in c.as_text() else "eigen" for name, (c, _) in progs.items()}
            for c, a in progs.values():
                jax.block_until_ready(c(*a))
        else:
            out = {}
            for name, (c, a) in progs.items():
                def run(c=c, a=a):
                    for _ in range(msg["reps"]):
                        r = c(*a)
                    jax.block_until_ready(r)
                out[name] = list(benchmark.timed_window(run, msg["reps"]))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main() -> None:
    from reed_jax import benchmark

    ap = benchmark.parser(__doc__)
    ap.add_argument("--shapes", default="1024x384x1536,4096x384x1536,4096x2048x2048", help="MxKxN, comma-separated")
    ap.add_argument("--xla_variants", default=DEFAULT_VARIANTS, help="';'-separated XLA_FLAGS, one worker each")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="products per program per window")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    print(benchmark.machine_line(), flush=True)
    flags = a.xla_variants.split(";")
    workers = {f: benchmark.Worker([sys.executable, os.path.abspath(__file__), "--worker"], env=dict(XLA_FLAGS=f))
               for f in flags}
    rows = []
    try:
        for shape in a.shapes.split(","):
            m, k, n = (int(v) for v in shape.split("x"))
            paths = {f: w.ask(cmd="setup", shape=[m, k, n]) for f, w in workers.items()}
            windows = benchmark.alternate({f: (lambda w=w: w.ask(cmd="window", reps=a.reps))
                                           for f, w in workers.items()}, a.windows, pause=0.2)
            gflop = 2 * m * k * n / 1e9
            print(f"x [{m}, {k}] @ w [{k}, {n}] ({gflop:.2f} GFLOP), CPU ms per product, median [min-max] of "
                  f"{a.windows} windows:", flush=True)
            row = dict(shape=[m, k, n], variants={})
            for prog in ("fwd", "wgrad", "wgrad_T"):
                first = [w[prog][1] for w in windows[flags[0]]]
                for f in flags:
                    cpu = [w[prog][1] for w in windows[f]]
                    s, ratio = benchmark.spread(cpu), benchmark.paired_ratios(cpu, first)
                    row["variants"].setdefault(f, {})[prog] = dict(path=paths[f][prog], cpu=s, vs_first=ratio)
                    print(f"  {prog:8s} XLA_FLAGS='{f}': {paths[f][prog]:8s} {1e3 * s['median']:8.2f} ms "
                          f"[{1e3 * s['min']:.2f}-{1e3 * s['max']:.2f}] {gflop / s['median']:6.1f} GFLOP/s"
                          + ("" if f == flags[0] else f"; / first {benchmark.format_spread(ratio, '{:.2f}')}"),
                          flush=True)
            rows.append(row)
    finally:
        for w in workers.values():
            w.close()
    benchmark.write_rows(a.json, rows, {"machine": benchmark.machine_line(), "argv": sys.argv})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker()
    else:
        main()
