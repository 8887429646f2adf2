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
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reed_jax import benchmark, config as config_lib, train  # noqa: E402
from reed_jax.data import pipeline, precompute, records  # noqa: E402
from reed_jax.molecule import evaluate as molecule_eval, flow, metrics, model as molecule_model  # noqa: E402

VARIANTS = ("base", "reed")


def variant_config(name: str, args):
    c = config_lib.molecule_config(name, backbone=args.backbone)
    c.model.update(hidden=args.hidden, projector_width=args.hidden)
    c.molecule.update(layers=args.layers, train_limit=args.train_limit, eval_limit=args.eval_limit,
                      encoder_steps=args.encoder_steps, sample_steps=args.sample_steps, eval_samples=args.samples,
                      energy_samples=0, size_buckets=tuple(int(b) for b in args.buckets.split(",") if b))
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    c.sample.batch_size = 64
    if name == "reed":
        c.targets.qm9_property.proj_width = args.hidden
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
    ap.add_argument("--backbone", default="egnn", choices=config_lib.MOLECULE_BACKBONES)
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
        points, t0 = [], time.time()
        for step in range(1, c.train.steps + 1):
            state, m = step_fn(state, {k: v for k, v in next(it).items() if k != "index"})
            if step % args.eval_every == 0 or step == c.train.steps:
                p = {"variant": name, "seed": seed, "step": step, "held_out_loss": val_loss(state.ema_params),
                     "loss_gen": float(m["loss/gen"]), "seconds": time.time() - t0}
                if step == c.train.steps:
                    counts = molecule_eval.sizes(manifest["lengths"]["train"], args.samples, 7)
                    s = molecule_eval.generate(sampler, state.ema_params, counts, c.molecule.max_atoms, 64, 11)
                    r, _ = metrics.evaluate(s, molecule_model.elements(c.molecule), train_smiles)
                    p.update({k: r[k] for k in ("atom_stability", "mol_stability", "validity", "fragment_validity",
                                                "uniqueness")})
                points.append(p)
                log(f"  {name:5s} seed {seed} step {step:6d}  held-out loss {p['held_out_loss']:.4f}"
                    + (f"  atom stab {p['atom_stability']:.3f} validity {p['validity']:.3f}" if "validity" in p else "")
                    + f"  ({p['seconds']:.0f} s)")
        return points

    points, wall = benchmark.run(args.workdir, settings, configs, seeds, args.steps, run_one, log)
    extra = ("atom_stability", "mol_stability", "validity", "fragment_validity")
    summary = {"settings": settings, "wall_seconds_this_invocation": wall,
               "variants": benchmark.summarize(points, "held_out_loss", "base", extra=extra)}
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    benchmark.plot(points, os.path.join(args.workdir, "molecule_convergence.png"),
                   f"{dict(egnn='EGNN', semla='Semla')[args.backbone]} {args.hidden}x{args.layers}, batch {args.batch}, "
                   f"{args.train_limit or 'all'} QM9 molecules; held-out flow-matching loss (EMA)", "held_out_loss", "held-out loss (lower is better)", VARIANTS)
    benchmark.report(summary["variants"], "held_out_loss", "base", log)
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
