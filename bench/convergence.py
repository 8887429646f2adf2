"""SiT vs REPA vs REED convergence on the embedded digits: the paper's headline at CPU scale.

    python bench/convergence.py --workdir=workdir/convergence                   # the README figure
    python bench/convergence.py --workdir=workdir/convergence --ablation        # + a(t) and warm-up ablations
    python bench/convergence.py --steps=3000 --eval_every=250 --seeds=0,1,2,3,4  # a longer run

Every variant starts from the same initial backbone weights (projectors come from one shared
initialisation too), sees the same batches in the same order and draws the same noise and t:
per seed, the runs differ only in their targets and curriculum. Every `--eval_every` steps the
EMA weights sample `--eval_samples` digits (fixed sampler, labels and seed) and are scored with
digits-FD and sample accuracy. The FD network is a different architecture and seed from the
target encoder (no training to the metric).

Outputs in --workdir: `points.jsonl` (one line per evaluation: variant, seed, step, digits_fd,
accuracy, seconds), `points.csv`, `convergence.png` (digits-FD against steps, median over seeds
with a min-max band) and `summary.json` (per variant: final digits-FD and accuracy, and steps to
reach plain SiT's final FD with the speed-up ratio, per seed and median/min/max; see
reed_jax/benchmark.py). Finished (variant, seed) runs
are kept in points.jsonl and skipped when the command is run again, and the run that was
interrupted resumes from its last evaluation (<workdir>/partial/).

Variants: sit (no targets), repa (the token target, constant weights), reed (token + pooled
targets, w_gen warm-up). Ablations (`--ablation`): reed_nowarmup (w_gen = 1 from step 0),
reed_warmup30 (warm-up over 30% of the steps), reed_at_linear (per-sample a(t) = 1 - t on both
targets), reed_at_cutoff (alignment only for t <= 0.5).
"""
from __future__ import annotations

import argparse
import json
import os

from reed_jax import benchmark, config as config_lib
from reed_jax.data import pipeline, precompute
from reed_jax.image import (
    config as image_config,
    digits,
)
from reed_jax.image.digits_fd import DigitsScorer

MAIN = ("sit", "repa", "reed")
FAMILY = ("irepa", "haste", "reg")  # the REPA family beside REED (--family): reed_jax.image.config.digits_config
ABLATIONS = ("reed_nowarmup", "reed_warmup30", "reed_at_linear", "reed_at_cutoff")


def variant_config(name: str, args) -> config_lib.ml_collections.ConfigDict:
    """The digits config of a variant with the benchmark's knobs applied."""
    base = name.split("_")[0]
    if name not in MAIN + FAMILY + ABLATIONS:
        raise ValueError(f"--variants: unknown variant {name!r}; expected one of {MAIN + FAMILY + ABLATIONS}")
    c = image_config.digits_config(base)
    c.model.update(depth=args.depth, hidden=args.hidden, heads=args.heads)
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    c.sample.update(method=args.sampler, num_steps=args.sample_steps, batch_size=args.eval_samples)
    c.eval.num_samples = args.eval_samples
    for t in c.targets.values():
        t.tap = f"block{min(int(t.tap[5:]), args.depth)}"
    if base == "reed":
        c.curriculum.gen.warmup = int(args.warmup * args.steps)
    if base == "haste":
        c.curriculum.align.stop_step = args.steps // 2  # the preset's stop at half of training
    if name == "reed_nowarmup":
        c.curriculum.gen.warmup = 0
    elif name == "reed_warmup30":
        c.curriculum.gen.warmup = int(0.3 * args.steps)
    elif name == "reed_at_linear":
        for t in c.targets.values():
            t.noise_weight = "linear"
    elif name == "reed_at_cutoff":
        for t in c.targets.values():
            t.update(noise_weight="cutoff", cutoff_lo=0.0, cutoff_hi=0.5)
    config_lib.validate(c)
    return c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="workdir/convergence")
    ap.add_argument("--variants", default=",".join(MAIN))
    ap.add_argument("--family", action="store_true", help=f"add the REPA family's other recipes {FAMILY}")
    ap.add_argument("--ablation", action="store_true", help="add the a(t) and warm-up ablations of REED")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval_every", type=int, default=60)
    ap.add_argument("--eval_samples", type=int, default=500)
    ap.add_argument("--sampler", default="heun")
    ap.add_argument("--sample_steps", type=int, default=10)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema_decay", type=float, default=0.99)
    ap.add_argument("--warmup", type=float, default=0.1, help="REED's w_gen warm-up as a fraction of --steps")
    args = ap.parse_args(argv)

    names = ([v for v in args.variants.split(",") if v] + (list(FAMILY) if args.family else [])
             + (list(ABLATIONS) if args.ablation else []))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in names}  # every config is validated before any compute
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "variants", "family", "ablation", "seeds")}
    first = next(iter(configs.values()))
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = precompute.precompute(first, args.workdir, log)
    data = pipeline.read_all(data_dir, "train")
    scorer = DigitsScorer(digits.fd_params(first, data_dir, log), digits.load()[0])
    points, wall = benchmark.run(args.workdir, settings, configs, seeds, args.steps,
                                 lambda name, c, params, seed: benchmark.train_image_variant(
                                     name, c, params, data, scorer, seed, args.eval_every, log,
                                     benchmark.partial_path(args.workdir, name, seed)), log)
    summary = {"settings": settings, "wall_seconds_this_invocation": wall,
               "variants": benchmark.step_times(benchmark.summarize(points, "digits_fd", "sit", extra=("accuracy",)),
                                                points, args.steps)}
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    benchmark.plot(points, os.path.join(args.workdir, "convergence.png"),
                   f"SiT depth {args.depth} hidden {args.hidden}, batch {args.batch}, lr {args.lr}; "
                   f"{args.eval_samples} samples, {args.sampler} {args.sample_steps} steps",
                   "digits_fd", "digits-FD (EMA, lower is better)", MAIN + FAMILY + ABLATIONS, dashed=ABLATIONS)
    benchmark.report(summary["variants"], "digits_fd", "sit", log)
    with open(os.path.join(args.workdir, "table.md"), "w") as fh:
        fh.write(benchmark.markdown_table(summary["variants"], "digits_fd", "sit", extra=("accuracy",)))
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
