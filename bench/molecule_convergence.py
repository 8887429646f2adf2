"""Baseline vs REED convergence for 3D molecule generation on QM9 (the qm9pack wheel).

    make data
    python bench/molecule_convergence.py --workdir=workdir/molecule_convergence
    python bench/molecule_convergence.py --backbone=semla --hidden=64 --layers=4 --steps=600 --eval_every=60 \
        --samples=128 --workdir=workdir/mc_semla                                    # the README's Semla figure
    python bench/molecule_convergence.py --backbone=semla --hidden=384 --layers=12 --train_limit=0 \
        --steps=100000 --batch=128 --lr=3e-4 --ema_decay=0.999                              # an accelerator

Both variants start from the same initial weights (one shared initialisation), see the same
batches with the same OT-paired noise per seed and draw the same times and categorical noise;
the batches come from the trainer's own iterator (`train.train_iterator`: size buckets when
`--buckets` is set, the host-side OT pairing of molecule.model.WithPrior), seeded per run;
they differ only in the stand-in encoder's target (`qm9_property`, aligned from layer 4, weight
0.2) and the REED curriculum (flow-matching losses warmed up over `--warmup` of the run). Every
`--eval_every` steps the EMA weights are scored by the held-out flow-matching loss (the training
objective's generative part on the validation molecules, fixed times and noise: lower is better);
at the end `--samples` molecules are generated and scored (atom and molecule stability, validity).
Outputs (resumable, see reed_jax/benchmark.py): points.jsonl / .csv, molecule_convergence.png,
summary.json (steps to reach the baseline's final held-out loss and the speed-up per seed).

`--target=ani1x` swaps the stand-in for the pretrained ANI-1x potential (issue 20): REED aligns
to one ensemble member's hidden layer `--ani_layer` averaged over atoms (standardised per channel
unless `--ani_raw`; `--ani_pool=element`: one mean per element H/C/N/O, concatenated); molecules
with fluorine are dropped for both variants (one shared precompute).
`--tap`, `--proj_width` and `--align_coeff` vary the alignment for the ablations:

    python bench/molecule_convergence.py --target=ani1x --hidden=32 --layers=4 --steps=3000 --eval_every=150 \
        --samples=128 --workdir=workdir/mc_ani                                            # docs/molecule_convergence_ani*
Each point also records `train_seconds` (the training steps alone, evaluations excluded); the
summary's `train_ms_per_step` is its slope after the first evaluation (compilation excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from reed_jax import benchmark, config as config_lib, targets, train
from reed_jax.data import pipeline, precompute, records
from reed_jax.molecule import (
    config as molecule_config,
    encoder as molecule_encoder,
    evaluate as molecule_eval,
    flow,
    metrics,
    model as molecule_model,
)

VARIANTS = ("base", "reed")


def variant_config(name: str, args):
    c = molecule_config.molecule_config(name, backbone=args.backbone)
    c.model.update(hidden=args.hidden, projector_width=args.hidden)
    c.molecule.update(layers=args.layers, train_limit=args.train_limit, eval_limit=args.eval_limit,
                      encoder_steps=args.encoder_steps, sample_steps=args.sample_steps, eval_samples=args.samples,
                      energy_samples=0, size_buckets=tuple(int(b) for b in args.buckets.split(",") if b))
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    c.sample.batch_size = 64
    c.molecule.update(ani_layer=args.ani_layer, ani_member=args.ani_member, ani_standardize=not args.ani_raw,
                      ani_pool=args.ani_pool)
    if args.target == molecule_encoder.ANI_ENCODER:
        c.targets = ml_collections.ConfigDict()  # the ANI target replaces the stand-in (base: no target; it
        if name == "reed":                       # reads the same shards, precomputed with the reed config)
            width = {1: 160, 2: 128, 3: 96}[args.ani_layer] * (4 if args.ani_pool == "element" else 1)
            c.targets.ani1x = targets.make(tap="layer4", pooled=True, dim=width, coeff=1.0,
                                           encoder=molecule_encoder.ANI_ENCODER)
    if name == "reed":
        t = next(iter(c.targets.values()))
        t.proj_width = args.proj_width or args.hidden
        if args.tap:
            t.tap = f"layer{args.tap}"
        c.curriculum.align.coeff = args.align_coeff
        c.curriculum.gen.warmup = int(args.warmup * args.steps)
    config_lib.validate(c)
    return c


def held_out_loss(config, model, batches: list[dict]):
    """(params) -> {'held_out_loss': mean per-molecule flow-matching loss over the held-out batches
    (fixed keys), and with a target 'held_out_cos': the mean cosine of the projected features to it}."""
    @jax.jit
    def one(params, batch, key):
        gen, align, _ = molecule_model.losses(config, model, params, batch, key)
        real = (batch["mask"].sum(1) > 0).astype(jnp.float32)
        cos = sum((-a * real).sum() for a in align.values()) / max(len(align), 1)
        return (gen * real).sum(), cos, real.sum()

    def fn(params):
        tot, cos, n = 0.0, 0.0, 0.0
        for i, b in enumerate(batches):
            for r in range(2):  # two draws of time and noise per molecule
                s, c, k = one(params, b, jax.random.PRNGKey(1000 * r + i))
                tot, cos, n = tot + float(s), cos + float(c), n + float(k)
        return {"held_out_loss": tot / n, **({"held_out_cos": cos / n} if config.targets else {})}

    return fn


def time_steps(configs: dict, data_dir: str, windows: int, workdir: str, log, steps_per_window: int = 20) -> dict:
    """Wall and CPU milliseconds per train step of each variant, measured in alternating windows of
    `steps_per_window` steps (base, reed, base, ...; the same batches, every size bucket compiled
    first), so load changes hit both alike; the REED / base ratio per window. Writes timing.json."""
    batches = []
    it = train.train_iterator(configs["base"], data_dir, log=lambda *_: None)
    while len(batches) < steps_per_window:
        batches.append({k: v for k, v in next(it).items() if k != "index"})
    inits = benchmark.shared_init(configs, 0)
    steps, states = {}, {}
    for name, c in configs.items():
        steps[name] = train.make_train_step(c, train.build_model(c), train.make_optimizer(c))
        states[name] = benchmark.initial_state(c, inits[name], 0)
    out = benchmark.time_train_steps(steps, states, {n: batches for n in configs}, windows, "base", log)
    out["bucket_sizes"] = sorted({int(b["mask"].shape[1]) for b in batches})
    out["reed_over_base"] = out.pop("over_base")["reed"]
    with open(os.path.join(workdir, "timing.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return out


def composition_probe(data_dir: str) -> dict:
    """How much of the stored target a linear function of the composition explains: least squares
    (ridge 1e-3) from [element counts, element fractions, atom count, 1] of the training molecules to
    their `target/ani1x`; returns the held-out {'r2', 'cos'} (mean cosine of prediction and target)."""
    tr, va = pipeline.read_all(data_dir, "train"), pipeline.read_all(data_dir, "validation")
    n_types = int(max(tr["types"].max(), va["types"].max())) + 1

    def feats(d):
        m = d["mask"].astype(bool)
        counts = np.stack([((d["types"] == e) & m).sum(1) for e in range(n_types)], 1)
        n = m.sum(1, keepdims=True)
        return np.concatenate([counts, counts / n, n, np.ones_like(n)], 1).astype(np.float64)

    key = next(k for k in tr if k.startswith(records.TARGET_PREFIX))
    ytr, yva = tr[key].astype(np.float64), va[key].astype(np.float64)
    xtr, xva = feats(tr), feats(va)
    w = np.linalg.solve(xtr.T @ xtr + 1e-3 * np.eye(xtr.shape[1]), xtr.T @ ytr)
    pred = xva @ w
    cos = (pred * yva).sum(1) / np.maximum(np.linalg.norm(pred, axis=1) * np.linalg.norm(yva, axis=1), 1e-12)
    return {"r2": float(1 - ((yva - pred) ** 2).sum() / ((yva - ytr.mean(0)) ** 2).sum()), "cos": float(cos.mean()),
            "dim": int(ytr.shape[1])}


def _ratio(base: list[dict], reed: list[dict]) -> tuple[float, bool]:
    """(ratio, reached): base's final step / REED's steps to the base's final held-out loss when REED
    reaches it; else the base's steps to REED's final loss / the base's final step (< 1: REED slower)."""
    fb, fr = max(base, key=lambda p: p["step"]), max(reed, key=lambda p: p["step"])
    r = benchmark.steps_to_reach(reed, fb["held_out_loss"], "held_out_loss")
    if r is not None:
        return fb["step"] / r, True
    b = benchmark.steps_to_reach(base, fr["held_out_loss"], "held_out_loss")
    return (b if b is not None else fb["step"]) / fb["step"], False


def table(workdirs: list[str], csv_path: str, log, plot_path: str = "") -> list[dict]:
    """One markdown row per finished workdir (its settings: tap, pooling, warm-up): the ratio per seed
    (`_ratio`), its median [min, max] and how many seeds reach the base's final loss, final held-out
    loss, atom stability and validity (median base / REED), the last batch's alignment cosine and
    w_align x alignment loss against the generative loss, and REED's training ms per step (after the
    first evaluation) with the load average when recorded. Also the base's flattening: the held-out loss
    it gains over the last quarter of the steps. Writes every point, tagged with its workdir, to csv_path."""
    import csv

    rows, every = [], []
    log("| setting | seed 0 | seed 1 | seed 2 | ratio median [min, max] | reached | final loss base / REED | "
        "atom stab. base / REED | validity base / REED | cos: last batch; held-out | w_align x L_align / L_gen | "
        "REED / base final loss | REED ms/step [load] |")
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in workdirs:
        with open(os.path.join(d, "settings.json")) as fh:
            st = json.load(fh)
        with open(os.path.join(d, "points.jsonl")) as fh:
            pts = [json.loads(line) for line in fh if line.strip()]
        every += [dict(p, workdir=os.path.basename(d.rstrip("/"))) for p in pts]
        per = lambda v, s: sorted((p for p in pts if p["variant"] == v and p["seed"] == s), key=lambda p: p["step"])
        seeds = sorted({p["seed"] for p in pts if p["variant"] == "reed"})
        ratios = {s: _ratio(per("base", s), per("reed", s)) for s in seeds}
        med = lambda xs: float(np.median(xs))
        last = lambda v, k: [per(v, s)[-1][k] for s in seeds if k in per(v, s)[-1]]
        ms = []
        for s in seeds:
            ps = per("reed", s)
            ms.append(1e3 * (ps[-1]["train_seconds"] - ps[0]["train_seconds"]) / (ps[-1]["step"] - ps[0]["step"]))
        loads = [p["load"] for p in pts if p["variant"] == "reed" and "load" in p]
        cos = [-x for x in last("reed", "loss_align")]
        hcos = last("reed", "held_out_cos")
        rel = [st["align_coeff"] * a / g for a, g in zip(last("reed", "loss_align"), last("reed", "loss_gen"))]
        name = (f"tap {st['tap'] or 4}, pool {st.get('ani_pool', 'mean')}, warm-up {st['warmup']:g}, "
                f"w_align {st['align_coeff']:g}, ANI layer {st['ani_layer']}")
        vals = [r for r, _ in ratios.values()]
        fmt = lambda x: f"{x:.2f}x"
        row = {"workdir": d, "setting": name, "ratios": {s: r for s, (r, _) in ratios.items()},
               "reached": sum(ok for _, ok in ratios.values()), "seeds": len(seeds)}
        rows.append(row)
        log(f"| {name} | " + " | ".join(fmt(ratios[s][0]) + ("" if ratios[s][1] else " (not reached)")
                                         for s in seeds)
            + f" | **{fmt(med(vals))}** [{min(vals):.2f}, {max(vals):.2f}] | {row['reached']}/{len(seeds)} | "
            f"{med(last('base', 'held_out_loss')):.4f} / {med(last('reed', 'held_out_loss')):.4f} | "
            f"{med(last('base', 'atom_stability')):.2f} / {med(last('reed', 'atom_stability')):.2f} | "
            f"{med(last('base', 'validity')):.2f} / {med(last('reed', 'validity')):.2f} | "
            + (f"{med(cos):.2f} [{min(cos):.2f}, {max(cos):.2f}]" if cos else "-")
            + (f"; held-out {med(hcos):.2f} [{min(hcos):.2f}, {max(hcos):.2f}]" if hcos else "")
            + (f" | {med(rel):+.2f} |" if rel else " | - |")
            + " " + ", ".join(f"{per('reed', s)[-1]['held_out_loss'] / per('base', s)[-1]['held_out_loss']:.3f}"
                              for s in seeds) + " |"
            + f" {med(ms):.0f} [{min(ms):.0f}-{max(ms):.0f}]"
            + (f" [{min(loads):.0f}-{max(loads):.0f}]" if loads else " [not recorded]") + " |")
    base = {}
    for p in every:  # the base runs are the same in every workdir (same settings but the REED-only keys)
        base.setdefault(p["seed"], {}).update({p["step"]: p["held_out_loss"]} if p["variant"] == "base" else {})
    for s, curve in sorted(base.items()):
        steps = sorted(curve)
        end, q = steps[-1], steps[-1] - steps[-1] // 4
        if q in curve:
            log(f"base seed {s}: held-out loss {curve[q]:.4f} at step {q}, {curve[end]:.4f} at {end}: "
                f"{100 * (curve[q] - curve[end]) / curve[q]:.1f}% over the last quarter, "
                f"{100 * (curve[end - 100] - curve[end]) / curve[end - 100]:.2f}% over the last 100 steps")
    probed = {}
    for d in workdirs:
        with open(os.path.join(d, "data", "schema.json")) as fh:
            key = fh.read()
        if key not in probed:
            probed[key] = composition_probe(os.path.join(d, "data"))
            r = probed[key]
            log(f"{d}: a linear function of the composition explains {r['r2']:.3f} of the {r['dim']}-d target's "
                f"held-out variance (mean cosine of its prediction {r['cos']:.3f})")
    if plot_path:
        plot_settings(every, rows, plot_path)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for p in every for k in p)))
            w.writeheader()
            w.writerows(every)
    return rows


def plot_settings(points: list[dict], rows: list[dict], path: str) -> None:
    """Left: held-out loss against steps, the base and each setting's REED (median over seeds, min-max
    band). Right: REED / base held-out loss per step and seed (median line; below 1: REED ahead)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)

    def curves(workdir, variant):
        ps = [p for p in points if p["workdir"] == workdir and p["variant"] == variant]
        steps = sorted({p["step"] for p in ps})
        seeds = sorted({p["seed"] for p in ps})
        val = {(p["seed"], p["step"]): p["held_out_loss"] for p in ps}
        return np.array(steps), np.array([[val.get((s, t), np.nan) for t in steps] for s in seeds])

    first = os.path.basename(rows[0]["workdir"].rstrip("/"))
    steps, base = curves(first, "base")
    ax.plot(steps, np.nanmedian(base, 0), color="k", lw=2, label=f"base ({len(base)} seeds)")
    ax.fill_between(steps, np.nanmin(base, 0), np.nanmax(base, 0), color="k", alpha=0.12)
    for r in rows:
        st, reed = curves(os.path.basename(r["workdir"].rstrip("/")), "reed")
        label = r["setting"].split(", ANI layer")[0]
        line, = ax.plot(st, np.nanmedian(reed, 0), label=f"REED {label}")
        ax.fill_between(st, np.nanmin(reed, 0), np.nanmax(reed, 0), color=line.get_color(), alpha=0.12)
        if reed.shape == base.shape:
            bx.plot(st, np.nanmedian(reed / base, 0), color=line.get_color(), label=label)
    ax.set_yscale("log")
    ax.set_ylim(None, float(np.nanmax(base[:, len(steps) // 10:])) * 1.05)
    ax.set(xlabel="training step", ylabel="held-out flow-matching loss (EMA)")
    bx.axhline(1.0, color="k", lw=1)
    bx.set(xlabel="training step", ylabel="REED / base held-out loss (median over seeds)")
    bx.set_ylim(0.9, 1.15)
    for a in (ax, bx):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    ax.set_title("EGNN 32x4 on QM9, ANI-1x target: every setting tried", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="workdir/molecule_convergence")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval_every", type=int, default=100)
    ap.add_argument("--backbone", default="egnn", choices=molecule_config.MOLECULE_BACKBONES)
    ap.add_argument("--buckets", default="16,20,24,29", help="size buckets (molecule.size_buckets); '' = none")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema_decay", type=float, default=0.99)
    ap.add_argument("--warmup", type=float, default=0.15, help="REED's w_gen warm-up as a fraction of --steps")
    ap.add_argument("--train_limit", type=int, default=4000)
    ap.add_argument("--eval_limit", type=int, default=400)
    ap.add_argument("--encoder_steps", type=int, default=1000)
    ap.add_argument("--sample_steps", type=int, default=50)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--target", default="qm9_property", choices=("qm9_property", molecule_encoder.ANI_ENCODER),
                    help="REED's target: the stand-in property encoder or the pretrained ANI-1x potential")
    ap.add_argument("--ani_layer", type=int, default=3, help="ANI-1x hidden layer (1..3) pooled as the target")
    ap.add_argument("--ani_member", type=int, default=0, help="ANI-1x ensemble member (0..7)")
    ap.add_argument("--ani_raw", action="store_true", help="store the ANI features unstandardised")
    ap.add_argument("--ani_pool", default="mean", choices=("mean", "element"),
                    help="pool the ANI features over all atoms (mean) or per element H/C/N/O, concatenated")
    ap.add_argument("--tap", type=int, default=0, help="align after this backbone layer (0 = the config's: 4)")
    ap.add_argument("--proj_width", type=int, default=0, help="projector hidden width (0 = --hidden)")
    ap.add_argument("--align_coeff", type=float, default=0.2, help="w_align (the config's: 0.2)")
    ap.add_argument("--time_windows", type=int, default=0,
                    help="instead of training: time base and REED train steps in this many alternating windows")
    ap.add_argument("--table", default="", help="instead of training: one table over these finished workdirs "
                    "(comma-separated), the points of all of them written to --table_csv")
    ap.add_argument("--table_csv", default="")
    ap.add_argument("--table_plot", default="", help="with --table: the held-out loss of every setting's REED runs "
                    "against the base (median over seeds, min-max band; and the ratio REED / base per step)")
    args = ap.parse_args(argv)
    if args.table:
        return table(args.table.split(","), args.table_csv, print, args.table_plot)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in VARIANTS}
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items()
                if k not in ("workdir", "seeds", "time_windows", "table", "table_csv", "table_plot")}
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = precompute.precompute(configs["reed"], args.workdir, log)
    va = pipeline.read_all(data_dir, "validation")
    va = {k: v for k, v in va.items() if k in molecule_model.FIELDS or k.startswith(records.TARGET_PREFIX)}
    va["prior"] = flow.noise_for_batch(np.random.default_rng(12345), va["coords"], va["mask"],
                                       molecule_model.coord_scale(configs["base"].molecule))
    held_out = [{k: jnp.asarray(v) for k, v in b.items()} for b in pipeline.pad_batches(va, 64)]
    if args.time_windows:
        return time_steps(configs, data_dir, args.time_windows, args.workdir, log)
    _, manifest = records.read_manifest(data_dir)
    train_smiles = [s for s in manifest["smiles"]["train"] if s]
    cache = {}

    def run_one(name, c, params, seed):
        if name not in cache:
            model, tx = train.build_model(c), train.make_optimizer(c)
            cache[name] = (model, train.make_train_step(c, model, tx), held_out_loss(c, model, held_out),
                           molecule_model.make_sampler(c, model))
        model, step_fn, val_loss, sampler = cache[name]
        state = benchmark.initial_state(c, params, seed)
        seeded = ml_collections.ConfigDict(c.to_dict())
        seeded.seed = seed  # the same batches and prior draws for every variant of a seed
        it = train.train_iterator(seeded, data_dir, log=lambda *_: None)
        points, t0, train_s, t_mark, last = [], time.time(), 0.0, time.time(), (0, 0.0)
        for step in range(1, c.train.steps + 1):
            state, m = step_fn(state, {k: v for k, v in next(it).items() if k != "index"})
            if step % args.eval_every == 0 or step == c.train.steps:
                jax.block_until_ready(state)
                train_s += time.time() - t_mark
                p = {"variant": name, "seed": seed, "step": step, **val_loss(state.ema_params),
                     "loss_gen": float(m["loss/gen"]), "seconds": time.time() - t0, "train_seconds": train_s,
                     "load": os.getloadavg()[0]}  # the machine's 1-min load average at this evaluation
                if "loss/align" in m:  # the last batch: sum over targets of coeff x mean(-cos), before w_align
                    p["loss_align"] = float(m["loss/align"])
                if step == c.train.steps:
                    counts = molecule_eval.sizes(manifest["lengths"]["train"], args.samples, 7)
                    s = molecule_eval.generate(sampler, state.ema_params, counts, c.molecule.max_atoms, 64, 11)
                    r, _ = metrics.evaluate(s, molecule_model.elements(c.molecule), train_smiles)
                    p.update({k: r[k] for k in ("atom_stability", "mol_stability", "validity", "fragment_validity",
                                                "uniqueness")})
                points.append(p)
                log(f"  {name:5s} seed {seed} step {step:6d}  held-out loss {p['held_out_loss']:.4f}"
                    + (f" cos {p['held_out_cos']:.3f}" if "held_out_cos" in p else "")
                    + (f"  atom stab {p['atom_stability']:.3f} validity {p['validity']:.3f}" if "validity" in p else "")
                    + f"  ({p['seconds']:.0f} s; {1e3 * (train_s - last[1]) / (step - last[0]):.0f} ms per step since "
                      f"the last evaluation)")
                t_mark, last = time.time(), (step, train_s)
        return points

    points, wall = benchmark.run(args.workdir, settings, configs, seeds, args.steps, run_one, log)
    extra = ("atom_stability", "mol_stability", "validity", "fragment_validity")
    summary = {"settings": settings, "wall_seconds_this_invocation": wall,
               "variants": benchmark.summarize(points, "held_out_loss", "base", extra=extra)}
    for v in VARIANTS:  # training wall time per step after the first evaluation (compilation excluded), per seed
        per = []
        for s in {p["seed"] for p in points if p["variant"] == v}:
            ps = sorted((p for p in points if p["variant"] == v and p["seed"] == s and "train_seconds" in p),
                        key=lambda p: p["step"])
            if len(ps) >= 2:
                per.append((ps[-1]["train_seconds"] - ps[0]["train_seconds"]) / (ps[-1]["step"] - ps[0]["step"]))
        if per and v in summary["variants"]:
            summary["variants"][v]["train_ms_per_step"] = benchmark.spread([1e3 * x for x in per])
            log(f"{v}: {benchmark.format_spread(summary['variants'][v]['train_ms_per_step'], '{:.0f}', ' ms')} "
                f"per training step")
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    benchmark.plot(points, os.path.join(args.workdir, "molecule_convergence.png"),
                   f"{dict(egnn='EGNN', semla='Semla')[args.backbone]} {args.hidden}x{args.layers}, batch {args.batch}, "
                   f"{args.train_limit or 'all'} QM9 molecules, target {args.target}; held-out flow-matching loss (EMA)",
                   "held_out_loss", "held-out loss (lower is better)", VARIANTS)
    benchmark.report(summary["variants"], "held_out_loss", "base", log)
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
