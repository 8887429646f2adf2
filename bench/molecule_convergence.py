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
    """(params) -> mean per-molecule flow-matching loss over the held-out batches (fixed keys)."""
    @jax.jit
    def one(params, batch, key):
        gen, _, _ = molecule_model.losses(config, model, params, batch, key)
        real = (batch["mask"].sum(1) > 0).astype(jnp.float32)
        return (gen * real).sum(), real.sum()

    def fn(params):
        tot, n = 0.0, 0.0
        for i, b in enumerate(batches):
            for r in range(2):  # two draws of time and noise per molecule
                s, c = one(params, b, jax.random.PRNGKey(1000 * r + i))
                tot, n = tot + float(s), n + float(c)
        return tot / n

    return fn


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
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in VARIANTS}
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "seeds")}
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = precompute.precompute(configs["reed"], args.workdir, log)
    va = pipeline.read_all(data_dir, "validation")
    va = {k: v for k, v in va.items() if k in molecule_model.FIELDS or k.startswith(records.TARGET_PREFIX)}
    va["prior"] = flow.noise_for_batch(np.random.default_rng(12345), va["coords"], va["mask"],
                                       molecule_model.coord_scale(configs["base"].molecule))
    held_out = [{k: jnp.asarray(v) for k, v in b.items()} for b in pipeline.pad_batches(va, 64)]
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
                p = {"variant": name, "seed": seed, "step": step, "held_out_loss": val_loss(state.ema_params),
                     "loss_gen": float(m["loss/gen"]), "seconds": time.time() - t0, "train_seconds": train_s}
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
