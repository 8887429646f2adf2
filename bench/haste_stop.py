"""What HASTE's stop saves: the train step before `curriculum.align.stop_step`, after it (the branch
without the alignment), and after it the slow way (alignment computed and weighted 0, as before
the branch existed), in alternating windows of one process.

    .venv/bin/python bench/haste_stop.py --windows=5 --steps=20
    .venv/bin/python bench/haste_stop.py --variant=reed --depth=8 --hidden=256 --batch=128

The digits preset (configs/demo.py:haste: SiT depth 4, hidden 128, patch 2 on 8x8x1 pixels; REPA's
token target on block 2 and the two attention terms on blocks 1-2, teacher maps from the stored
tokens' affinity) on random batches of its shapes. Prints each step's time (CPU and wall, median
[IQR]) and the ratios after / before and fast / slow after the stop.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import benchmark, train
from reed_jax.image import config as image_config


def main() -> None:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--variant", default="haste", help="digits preset (its stop is set to 1 if it has none)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="steps per window")
    a = ap.parse_args()
    print(benchmark.machine_line(), flush=True)
    c = image_config.digits_config(a.variant)
    c.model.update(depth=a.depth, hidden=a.hidden)
    c.train.batch_size = a.batch
    stop = c.curriculum.align.stop_step = c.curriculum.align.stop_step or 1
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (a.batch, *c.data.image_shape)).astype(np.float32),
             "label": rng.integers(0, c.data.num_classes, a.batch).astype(np.int32),
             **{f"target/{n}": rng.normal(size=(a.batch, *s)).astype(np.float32)
                for n, s in image_config.target_shapes(c).items() if c.targets[n].kind == "features"}}
    model, tx = train.build_model(c), train.make_optimizer(c)
    fast, slow = train.make_train_step(c, model, tx), train.make_train_step(c, model, tx, skip_stopped_alignment=False)

    def runner(step_fn, at: int):
        holder = [train.init_state(c, model, tx).replace(step=jnp.asarray(at, jnp.int32))]

        def window():
            s = holder[0]
            for _ in range(a.steps):
                s, m = step_fn(s.replace(step=jnp.asarray(at, jnp.int32)), batch)  # stay on this side of the stop
            jax.block_until_ready(m)
            holder[0] = s
        window()  # compile + warm-up
        return lambda: benchmark.timed_window(window, a.steps)

    times = benchmark.alternate({"before the stop": runner(fast, 0), "after, fast": runner(fast, stop),
                                 "after, slow": runner(slow, stop)}, a.windows)
    rows = {}
    for clock, i in (("cpu", 1), ("wall", 0)):
        t = {k: [w[i] for w in v] for k, v in times.items()}
        for k, v in t.items():
            print(f"  {clock:4s} {k:16s} {benchmark.format_spread(benchmark.spread([1000 * x for x in v]), '{:.2f}')} "
                  f"ms/step", flush=True)
        rows[clock] = {"fast / slow after the stop": benchmark.paired_ratios(t["after, fast"], t["after, slow"]),
                       "after (fast) / before": benchmark.paired_ratios(t["after, fast"], t["before the stop"]),
                       "ms": {k: benchmark.spread([1000 * x for x in v]) for k, v in t.items()}}
        for k in ("fast / slow after the stop", "after (fast) / before"):
            print(f"  {clock:4s} {k}: {benchmark.format_spread(rows[clock][k], '{:.3f}')}", flush=True)
    benchmark.write_rows(a.json, [dict(vars(a), **rows)], {"machine": benchmark.machine_line()})


if __name__ == "__main__":
    main()
