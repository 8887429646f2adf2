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
with a min-max band) and `summary.json` (per variant: final FD, and steps to reach plain SiT's
final FD with the speed-up ratio, per seed and median/min/max). Finished (variant, seed) runs
are kept in points.jsonl and skipped when the command is run again, so an interrupted benchmark
resumes.

Variants: sit (no targets), repa (the token target, constant weights), reed (token + pooled
targets, w_gen warm-up). Ablations (`--ablation`): reed_nowarmup (w_gen = 1 from step 0),
reed_warmup30 (warm-up over 30% of the steps), reed_at_linear (per-sample a(t) = 1 - t on both
targets), reed_at_cutoff (alignment only for t <= 0.5).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from reed_jax import config as config_lib, train  # noqa: E402
from reed_jax.data import digits, pipeline, precompute, records  # noqa: E402
from reed_jax.evaluation.digits_fd import DigitsScorer  # noqa: E402

MAIN = ("sit", "repa", "reed")
ABLATIONS = ("reed_nowarmup", "reed_warmup30", "reed_at_linear", "reed_at_cutoff")


def variant_config(name: str, args) -> "config_lib.ml_collections.ConfigDict":
    """The digits config of a variant with the benchmark's knobs applied."""
    base = name.split("_")[0]
    if base not in MAIN or (name not in MAIN and name not in ABLATIONS):
        raise ValueError(f"--variants: unknown variant {name!r}; expected one of {MAIN + ABLATIONS}")
    c = config_lib.digits_config(base)
    c.model.update(depth=args.depth, hidden=args.hidden, heads=args.heads)
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    c.sample.update(method=args.sampler, num_steps=args.sample_steps, batch_size=args.eval_samples)
    c.eval.num_samples = args.eval_samples
    for t in c.targets.values():
        t.depth = min(t.depth, args.depth)
    if base == "reed":
        c.curriculum.gen.warmup = int(args.warmup * args.steps)
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


def shared_init(configs: dict, seed: int) -> dict:
    """Per variant: initial params cut from one initialisation of the union of all variants' modules,
    so the backbone (and any projector two variants share) starts identical everywhere."""
    union = None
    for c in configs.values():
        if union is None or len(c.targets) > len(union.targets):
            union = c
    union = config_lib.ml_collections.ConfigDict(union.to_dict())
    union.seed = seed
    model = train.build_model(union)
    ref = train.init_state(union, model, train.make_optimizer(union)).params
    out = {}
    for name, c in configs.items():
        shapes = jax.eval_shape(lambda c=c: train.init_state(c, train.build_model(c), train.make_optimizer(c))).params
        missing = set(shapes) - set(ref)
        if missing:
            raise ValueError(f"variant {name}: modules {sorted(missing)} are not in the shared initialisation")
        out[name] = {k: ref[k] for k in shapes}
        for a, b in zip(jax.tree.leaves(out[name]), jax.tree.leaves(shapes)):
            if a.shape != b.shape:
                raise ValueError(f"variant {name}: shape {b.shape} != {a.shape}")
    return out


def initial_state(config, params, seed: int) -> train.TrainState:
    tx = train.make_optimizer(config)
    zero = lambda: jnp.zeros((), jnp.int32)
    params = jax.tree.map(jnp.copy, params)
    return train.TrainState(step=zero(), params=params, ema_params=jax.tree.map(jnp.copy, params),
                            opt_state=tx.init(params), rng=jax.random.PRNGKey(1000 + seed),
                            skipped=zero(), consecutive_skips=zero())


def batches(data: dict, batch: int, seed: int):
    """Shuffled epochs of the in-memory shards, the same order for every variant of a seed."""
    rng = np.random.default_rng(seed)
    n = len(data["label"])
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch]
            yield {k: v[idx] for k, v in data.items()}


_COMPILED = {}


def compiled(name: str, config):
    """(train step, sample fn) of a variant, built once and reused for every seed."""
    if name not in _COMPILED:
        model, tx = train.build_model(config), train.make_optimizer(config)
        _COMPILED[name] = train.make_train_step(config, model, tx), train.make_sample_fn(config, model)
    return _COMPILED[name]


def run_one(name: str, config, params, data: dict, scorer: DigitsScorer, seed: int, eval_every: int, log):
    """Train one variant from `params`; returns its evaluation points."""
    step_fn, sample_fn = compiled(name, config)
    labels = (np.arange(config.eval.num_samples) % config.data.num_classes).astype(np.int32)
    fields = ["image", "label"] + [records.TARGET_PREFIX + n for n in config.targets]
    state = initial_state(config, params, seed)
    it = batches({k: data[k] for k in fields}, config.train.batch_size, seed)
    points, t0 = [], time.time()
    for step in range(1, config.train.steps + 1):
        state, metrics = step_fn(state, next(it))
        if step % eval_every == 0 or step == config.train.steps:
            images = train.generate(sample_fn, state.ema_params, labels, config.sample.batch_size, seed=12345)
            score = scorer(images, labels)
            p = {"variant": name, "seed": seed, "step": step, **score, "loss_gen": float(metrics["loss/gen"]),
                 "seconds": time.time() - t0}
            points.append(p)
            log(f"  {name:15s} seed {seed} step {step:5d}  digits-FD {p['digits_fd']:8.3f}  "
                f"accuracy {p['accuracy']:.3f}  ({p['seconds']:.0f} s)")
    return points


def steps_to_reach(points: list[dict], threshold: float) -> float | None:
    """First step where digits-FD <= threshold, interpolated linearly in log FD between evaluations;
    None if never reached."""
    prev = None
    for p in sorted(points, key=lambda p: p["step"]):
        if p["digits_fd"] <= threshold:
            if prev is None:
                return float(p["step"])
            la, lb, lt = np.log(prev["digits_fd"]), np.log(p["digits_fd"]), np.log(threshold)
            return float(prev["step"] + (p["step"] - prev["step"]) * (la - lt) / (la - lb))
        prev = p
    return None


def summarize(points: list[dict], steps: int) -> dict:
    """Final FD per variant and steps to reach plain SiT's final FD (per seed: SiT of that seed)."""
    by = {}
    for p in points:
        by.setdefault(p["variant"], {}).setdefault(p["seed"], []).append(p)
    final = lambda ps: min(ps, key=lambda p: -p["step"])
    out = {}
    for v, seeds in by.items():
        row = {"final_fd": {s: final(ps)["digits_fd"] for s, ps in seeds.items()},
               "final_accuracy": {s: final(ps)["accuracy"] for s, ps in seeds.items()}}
        if "sit" in by and v != "sit":
            reach, ratio = {}, {}
            for s, ps in seeds.items():
                if s not in by["sit"]:
                    continue
                thr = final(by["sit"][s])["digits_fd"]
                r = steps_to_reach(ps, thr)
                reach[s] = r
                ratio[s] = None if r is None else final(by["sit"][s])["step"] / r
            row["steps_to_sit_final"] = reach
            vals = [r for r in ratio.values() if r is not None]
            row["speedup"] = ratio
            row["speedup_stats"] = ({"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals)),
                                     "reached": f"{len(vals)}/{len(ratio)}"} if vals else {"reached": f"0/{len(ratio)}"})
        for key in ("final_fd", "final_accuracy"):
            vals = list(row[key].values())
            row[key + "_stats"] = {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals))}
        out[v] = row
    return out


def plot(points: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    variants = sorted({p["variant"] for p in points}, key=lambda v: (MAIN + ABLATIONS).index(v))
    for v in variants:
        steps = sorted({p["step"] for p in points if p["variant"] == v})
        table = np.array([[next((p["digits_fd"] for p in points if p["variant"] == v and p["step"] == s
                                 and p["seed"] == seed), np.nan) for s in steps]
                          for seed in sorted({p["seed"] for p in points if p["variant"] == v})])
        line, = ax.plot(steps, np.nanmedian(table, 0), marker="o", ms=3, label=f"{v} ({len(table)} seeds)",
                        ls="-" if v in MAIN else "--")
        ax.fill_between(steps, np.nanmin(table, 0), np.nanmax(table, 0), color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("digits-FD (EMA, lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="workdir/convergence")
    ap.add_argument("--variants", default=",".join(MAIN))
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

    names = [v for v in args.variants.split(",") if v] + (list(ABLATIONS) if args.ablation else [])
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in names}  # every config is validated before any compute
    os.makedirs(args.workdir, exist_ok=True)
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "variants", "ablation", "seeds")}
    settings_path = os.path.join(args.workdir, "settings.json")
    if os.path.exists(settings_path):
        with open(settings_path) as fh:
            old = json.load(fh)
        if old != settings:
            raise SystemExit(f"{args.workdir} holds a benchmark with other settings ({settings_path}); "
                             f"use another --workdir (existing results are not overwritten)")
    with open(settings_path, "w") as fh:
        json.dump(settings, fh, indent=1)

    first = next(iter(configs.values()))
    data_dir = precompute.precompute(first, args.workdir, log)
    data = pipeline.read_all(data_dir, "train")
    scorer = DigitsScorer(precompute.fd_params(first, data_dir, log), digits.load()[0])

    points_path = os.path.join(args.workdir, "points.jsonl")
    points = []
    if os.path.exists(points_path):
        with open(points_path) as fh:
            points = [json.loads(line) for line in fh if line.strip()]
    done = {(p["variant"], p["seed"]) for p in points if p["step"] == args.steps}
    t_start = time.time()
    for seed in seeds:
        inits = shared_init(configs, seed)
        for name, c in configs.items():
            if (name, seed) in done:
                log(f"{name} seed {seed}: already done, kept")
                continue
            c.seed = seed
            new = run_one(name, c, inits[name], data, scorer, seed, args.eval_every, log)
            points = [p for p in points if (p["variant"], p["seed"]) != (name, seed)] + new
            with open(points_path, "w") as fh:  # whole file rewritten: a killed run leaves no partial seed
                fh.writelines(json.dumps(p) + "\n" for p in points)
    wall = time.time() - t_start

    with open(os.path.join(args.workdir, "points.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)
    summary = {"settings": settings, "wall_seconds_this_invocation": wall, "variants": summarize(points, args.steps)}
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    plot(points, os.path.join(args.workdir, "convergence.png"),
         f"SiT depth {args.depth} hidden {args.hidden}, batch {args.batch}, lr {args.lr}; "
         f"{args.eval_samples} samples, {args.sampler} {args.sample_steps} steps")
    log(f"\n{'variant':15s} {'final digits-FD (median [min, max])':38s} speed-up to SiT's final FD")
    for v, row in summary["variants"].items():
        f = row["final_fd_stats"]
        s = row.get("speedup_stats")
        sp = "-" if s is None else (f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}] reached {s['reached']}"
                                    if "median" in s else f"not reached ({s['reached']})")
        log(f"{v:15s} {f['median']:8.3f} [{f['min']:.3f}, {f['max']:.3f}]{'':14s} {sp}")
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
