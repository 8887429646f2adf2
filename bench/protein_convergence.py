"""Baseline vs REED convergence for protein inverse folding on the embedded PDB chains.

    make data
    python bench/protein_convergence.py --workdir=workdir/protein_convergence            # the docs/benchmarks.md figure
    python bench/protein_convergence.py --hidden=128 --k=30 --steps=4000 --seeds=0,1,2   # reference width

The model and objective are the reference's (REED `protein/fmif`): decoder edge updates with the
pair target on decoder layer 2's updated edges, a 22-class head, the generative term at 10x the
token-mean CE (the reference's sum / 2000 on 20,000-token batches), token-weighted alignment.
CPU-scale choices kept from the demo size: EMA 0.98 on the evaluated weights, gradient clipping
1.0, `--sample_steps` 50 sampler grid points (the reference size: no EMA, no clipping, 500).

Both variants start from the same initial weights (one shared initialisation), see the same
batches and draw the same masks and noise per seed; they differ only in the three ProteinMPNN-teacher
targets and the REED curriculum (w_align 0.2 cosine-decayed over the run, w_gen warmed up over
`--warmup` of it). Every `--eval_every` steps the EMA weights are scored on the held-out chains:
perplexity under training-style random masking (fixed seeds; lower is better) and masked accuracy;
recovery of fully sampled sequences at the end. Outputs (resumable, see reed_jax/benchmark.py):
points.jsonl / .csv, protein_convergence.png, summary.json (steps to reach the baseline's final
perplexity and the speed-up per seed).
"""
from __future__ import annotations

import json
import os
import time

from reed_jax import benchmark, config as config_lib, train
from reed_jax.data import pipeline, precompute
from reed_jax.protein import (
    config as protein_config,
    evaluate as protein_eval,
    model as protein_model,
)

VARIANTS = ("base", "reed")


def variant_config(name: str, args):
    c = protein_config.protein_config(name)
    c.model.update(hidden=args.hidden)
    c.protein.update(k=args.k, max_length=args.max_length, sample_steps=args.sample_steps, eval_samples=2)
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    if name == "reed":
        c.curriculum.gen.warmup = int(args.warmup * args.steps)
        c.curriculum.align.decay_steps = args.steps
    config_lib.validate(c)
    return c


def main(argv=None) -> dict:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--workdir", default="workdir/protein_convergence")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval_every", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--max_length", type=int, default=176)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema_decay", type=float, default=0.98)
    ap.add_argument("--warmup", type=float, default=0.25, help="REED's w_gen warm-up as a fraction of --steps")
    ap.add_argument("--sample_steps", type=int, default=50)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in VARIANTS}
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "seeds")}
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = precompute.precompute(configs["reed"], args.workdir, log)
    data = pipeline.read_all(data_dir, "train")
    held_out = protein_model.eval_batches(data_dir, "validation", args.batch)
    steps_cache = {}

    def run_one(name, c, params, seed):
        if name not in steps_cache:
            model, tx = train.build_model(c), train.make_optimizer(c)
            steps_cache[name] = (train.make_train_step(c, model, tx),
                                 protein_eval.make_evaluator(c, model, held_out, sample_metrics=False),
                                 protein_eval.make_evaluator(c, model, held_out))
        step_fn, quick, full = steps_cache[name]
        fields = list(protein_model.BATCH_FIELDS) + ([k for k in data if k.startswith("target/")] if c.targets else [])
        state = benchmark.initial_state(c, params, seed)
        it = benchmark.batches({k: data[k] for k in fields}, c.train.batch_size, seed)
        points, t0 = [], time.time()
        for step in range(1, c.train.steps + 1):
            state, metrics = step_fn(state, next(it))
            if step % args.eval_every == 0 or step == c.train.steps:
                r, _ = (full if step == c.train.steps else quick)(state.ema_params, step)
                p = {"variant": name, "seed": seed, "step": step, "perplexity": r["perplexity"],
                     "masked_accuracy": r["masked_accuracy"], "recovery": r.get("recovery", float("nan")),
                     "loss_gen": float(metrics["loss/gen"]), "seconds": time.time() - t0}
                points.append(p)
                log(f"  {name:5s} seed {seed} step {step:5d}  perplexity {p['perplexity']:7.3f}  "
                    f"masked acc {p['masked_accuracy']:.3f}  ({p['seconds']:.0f} s)")
        return points

    points, wall = benchmark.run(args.workdir, settings, configs, seeds, args.steps, run_one, log)
    summary = {"settings": settings, "wall_seconds_this_invocation": wall,
               "variants": benchmark.summarize(points, "perplexity", "base", extra=("masked_accuracy", "recovery"))}
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    benchmark.plot(points, os.path.join(args.workdir, "protein_convergence.png"),
                   f"MPNN width {args.hidden}, k {args.k}, batch {args.batch} chains, lr {args.lr}; "
                   f"held-out perplexity (EMA)", "perplexity", "held-out perplexity (lower is better)", VARIANTS)
    benchmark.report(summary["variants"], "perplexity", "base", log)
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
