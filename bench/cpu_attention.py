"""SiT's attention block (qkv projection, attention, output projection; forward + backward) under
`model.attention` = 'xla' (jax.nn.dot_product_attention's path on CPU) and 'einsum' (head-major
einsums, `image.sit.attention_einsum`; what '' runs on CPU), timed in alternating windows in one
process.

    .venv/bin/python bench/cpu_attention.py --shapes=16x256x6x64,64x64x6x64,16x256x12x64 --threads=1

Shapes are batch x tokens x heads x head_dim (S/2 at 32x32x4 latents: 256 tokens, 6 heads of 64).
Prints CPU ms per forward + backward of the block, median [min-max], and the ratio einsum / xla.
"""
from __future__ import annotations

import os


def main() -> None:
    from reed_jax import benchmark

    ap = benchmark.parser(__doc__)
    ap.add_argument("--shapes", default="16x256x6x64,64x64x6x64")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])  # before jax starts its CPU client

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from reed_jax.image import sit

    print(benchmark.machine_line(), flush=True)
    rows = []
    for shape in a.shapes.split(","):
        b, t, h, d = (int(v) for v in shape.split("x"))
        x = jax.random.normal(jax.random.PRNGKey(0), (b, t, h * d))
        params = nn.unbox(sit.Attention(h * d, h).init(jax.random.PRNGKey(1), x)["params"])
        fns = {}
        for impl in ("xla", "einsum"):
            att = sit.Attention(h * d, h, implementation=impl)
            fns[impl] = jax.jit(jax.value_and_grad(lambda p, x, att=att: jnp.sum(jnp.sin(att.apply({"params": p}, x))),
                                                   argnums=(0, 1)))
            jax.block_until_ready(fns[impl](params, x))

        def runner(f):
            def window():
                for _ in range(a.reps):
                    out = f(params, x)
                jax.block_until_ready(out)
            return lambda: benchmark.timed_window(window, a.reps)

        times = benchmark.alternate({k: runner(f) for k, f in fns.items()}, a.windows)
        cpu = {k: [w.cpu for w in v] for k, v in times.items()}
        ratio = benchmark.paired_ratios(cpu["einsum"], cpu["xla"])
        print(f"B {b} T {t} heads {h} head_dim {d}: forward + backward, CPU ms: "
              + "; ".join(f"'{k}' {1e3 * benchmark.spread(v)['median']:.1f} [{1e3 * min(v):.1f}-{1e3 * max(v):.1f}]"
                          for k, v in cpu.items())
              + f"; einsum / xla {benchmark.format_spread(ratio, '{:.2f}')}", flush=True)
        rows.append(dict(shape=[b, t, h, d], cpu={k: benchmark.spread(v) for k, v in cpu.items()}, ratio=ratio))
    benchmark.write_rows(a.json, rows, {"machine": benchmark.machine_line()})


if __name__ == "__main__":
    main()
