"""Shared machinery of the convergence benchmarks (bench/convergence.py: digits images;
bench/protein_convergence.py: inverse folding): identical starts, resumable runs, steps-to-target
ratios, plots.

A benchmark trains several variants (configs differing only in targets and curriculum) per seed
from one shared initialisation, evaluates a metric (lower is better) every few steps and reports,
per variant and seed, the steps it needs to reach the baseline's final value.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from reed_jax import train
from reed_jax.data import records


def shared_init(configs: dict, seed: int) -> dict:
    """Per variant: its initial params from `seed`. Flax draws every parameter from a key folded from
    its module path, so a module two variants share (the backbone, a projector of the same target)
    starts identical in both whatever else either has (an extra projector, REG's class-token
    layers); this is checked here, not assumed: a shared path with other values or shapes raises."""
    out, first = {}, {}
    for name, c in configs.items():
        c = ml_collections.ConfigDict(c.to_dict())
        c.seed = seed
        params = train.init_state(c, train.build_model(c), train.make_optimizer(c)).params
        flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
        for path, v in flat.items():
            if path not in first:
                first[path] = (name, v)
                continue
            other, w = first[path]
            if v.shape != w.shape or not np.array_equal(np.asarray(v), np.asarray(w)):
                raise ValueError(f"variants {other} and {name}: parameter {path} does not start identical "
                                 f"({w.shape} vs {v.shape})")
        out[name] = params
    return out


def initial_state(config, params, seed: int) -> train.TrainState:
    tx = train.make_optimizer(config)
    zero = lambda: jnp.zeros((), jnp.int32)
    params = jax.tree.map(jnp.copy, params)
    return train.TrainState(step=zero(), params=params, ema_params=jax.tree.map(jnp.copy, params),
                            opt_state=tx.init(params), rng=jax.random.PRNGKey(1000 + seed),
                            skipped=zero(), consecutive_skips=zero())


def batches(data: dict, batch: int, seed: int):
    """Shuffled epochs of in-memory examples, the same order for every variant of a seed."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(data.values())))
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch]
            yield {k: v[idx] for k, v in data.items()}


_COMPILED: dict = {}


def compiled(name: str, config, *extra: Callable) -> tuple:
    """(train step, *[f(config, model) for f in extra]) of a variant, built once per name and
    reused for every seed (the configs of one variant differ only in `seed`)."""
    if name not in _COMPILED:
        model, tx = train.build_model(config), train.make_optimizer(config)
        _COMPILED[name] = (train.make_train_step(config, model, tx), *(f(config, model) for f in extra))
    return _COMPILED[name]


def partial_path(workdir: str, name: str, seed: int) -> str:
    """Where `train_and_evaluate` keeps the state of one (variant, seed) of a benchmark (at its last
    evaluation; the final state once finished)."""
    return os.path.join(workdir, "partial", f"{name}_seed{seed}.npz")


def _save_partial(path: str, state, step: int, points: list[dict], train_s: float, seconds: float) -> None:
    """The state's leaves and the run's progress, written atomically (tmp file, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    leaves = {f"leaf_{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(state))}
    meta = json.dumps({"step": step, "points": points, "train_seconds": train_s, "seconds": seconds})
    tmp = path + ".tmp.npz"
    np.savez(tmp, meta=np.array(meta), **leaves)
    os.replace(tmp, path)


def _load_partial(path: str, state) -> tuple:
    """(state, step, points, train_seconds, seconds) from `_save_partial`'s file. The file is read
    without pickle and every leaf must have the shape and dtype of `state`'s (else a ValueError
    names the file and the leaf)."""
    leaves, treedef = jax.tree.flatten(state)
    with np.load(path, allow_pickle=False) as z:
        names = [k for k in z.files if k.startswith("leaf_")]
        if len(names) != len(leaves) or "meta" not in z.files:
            raise ValueError(f"{path}: holds {len(names)} state arrays, this variant has {len(leaves)}; "
                             f"delete it to restart this (variant, seed)")
        new = []
        for i, ref in enumerate(leaves):
            v = z[f"leaf_{i}"]
            if v.shape != np.shape(ref) or v.dtype != np.asarray(ref).dtype:
                raise ValueError(f"{path}: leaf_{i} is {v.dtype}{list(v.shape)}, the state's is "
                                 f"{np.asarray(ref).dtype}{list(np.shape(ref))}; delete it to restart")
            new.append(jnp.asarray(v))
        meta = json.loads(str(z["meta"]))
    return (jax.tree.unflatten(treedef, new), int(meta["step"]), meta["points"], float(meta["train_seconds"]),
            float(meta["seconds"]))


def train_and_evaluate(name: str, seed: int, state: train.TrainState, batches, step_fn: Callable, steps: int,
                       eval_every: int, evaluate: Callable[[train.TrainState, int], dict], log=print,
                       checkpoint: str | None = None) -> list[dict]:
    """Train `state` for `steps` steps of `step_fn` on `batches` and evaluate every `eval_every` steps
    and at the last one. `evaluate(state, step)` returns {metric: float} (it reads state.ema_params).

    With `checkpoint` (a .npz path, see `partial_path`), the state and the points so far are saved
    after every evaluation, and a run that finds the file resumes from it: the batches before its
    step are drawn and dropped (the iterator is deterministic per seed), so the resumed run sees the
    same batches as an uninterrupted one. The file is kept when the run finishes (the final state):
    a later call with more `steps` continues the run from there (`run(..., extend=True)`), the same
    as one run of that length when nothing else depends on `steps`.

    Returns one point per evaluation: {'variant', 'seed', 'step', **metrics, 'loss_gen' and, with
    targets, 'loss_align' (the last batch's), 'seconds' (wall since the start, evaluations included),
    'train_seconds' (training steps only: the clock stops after blocking on the state)}."""
    points, t0, train_s, start = [], time.time(), 0.0, 0
    if checkpoint and os.path.exists(checkpoint):
        state, start, points, train_s, seconds = _load_partial(checkpoint, state)
        if start > steps:
            raise ValueError(f"{checkpoint}: holds the state at step {start}, past this run's {steps} steps")
        t0 -= seconds
        for _ in range(start):
            next(batches)
        log(f"  {name:15s} seed {seed}: resumed at step {start} from {checkpoint}")
    for step in range(start + 1, steps + 1):
        ts = time.time()
        state, m = step_fn(state, next(batches))
        if step % eval_every and step != steps:
            train_s += time.time() - ts  # dispatch only; the wait is counted at the next blocking step
            continue
        jax.block_until_ready(state)
        train_s += time.time() - ts
        scores = evaluate(state, step)
        p = {"variant": name, "seed": seed, "step": step, **scores, "loss_gen": float(m["loss/gen"])}
        if "loss/align" in m:
            p["loss_align"] = float(m["loss/align"])
        p.update(seconds=time.time() - t0, train_seconds=train_s)
        points.append(p)
        shown = "  ".join(f"{k} {v:8.4g}" for k, v in scores.items() if isinstance(v, float | int))
        log(f"  {name:15s} seed {seed} step {step:5d}  {shown}  ({p['seconds']:.0f} s, "
            f"{1000 * train_s / step:.0f} ms/step)")
        if checkpoint:
            _save_partial(checkpoint, state, step, points, train_s, p["seconds"])
    return points


def train_image_variant(name: str, config, params: dict, data: dict, scorer: Callable, seed: int, eval_every: int,
                        log=print, checkpoint: str | None = None) -> list[dict]:
    """`train_and_evaluate` for a class-conditional image variant trained on in-memory `data`
    ({'image', 'label', 'target/<name>'}): every evaluation samples `config.eval.num_samples` images
    with the EMA weights (labels cycling over the classes, sampler seed fixed) and scores them with
    `scorer(images, labels) -> {metric: float}`. `checkpoint`: see `train_and_evaluate`."""
    from reed_jax.image import evaluate as image_eval

    step_fn, sample_fn = compiled(name, config, image_eval.make_sample_fn)
    labels = (np.arange(config.eval.num_samples) % config.data.num_classes).astype(np.int32)
    fields = ["image", "label"] + [records.TARGET_PREFIX + n for n in config.targets
                                   if records.TARGET_PREFIX + n in data]  # (affinity teachers are not data)
    evaluate = lambda state, step: scorer(image_eval.generate(sample_fn, state.ema_params, labels,
                                                              config.sample.batch_size, seed=12345), labels)
    return train_and_evaluate(name, seed, initial_state(config, params, seed),
                              batches({k: data[k] for k in fields}, config.train.batch_size, seed),
                              step_fn, config.train.steps, eval_every, evaluate, log, checkpoint)


def time_train_steps(steps: Mapping[str, Callable], states: Mapping[str, train.TrainState],
                     batches: Mapping[str, list[dict]], windows: int, baseline: str, log=print) -> dict:
    """Wall and CPU milliseconds per train step of each variant, measured in alternating windows
    (variant a, b, c, a, b, c, ...: load changes hit every variant alike), each window one pass over
    the variant's `batches` (the same examples for all; a variant's list may carry only the fields
    it reads). Every batch is run once before timing (compiles every shape). Returns {'ms_per_step':
    {variant: {'wall', 'cpu': spread}}, 'over_<baseline>': {variant: {'wall', 'cpu': per-window
    ratio spread}}, 'steps_per_window', 'machine'} and logs it."""
    states = dict(states)

    def one_pass(name):
        for b in batches[name]:
            states[name], _ = steps[name](states[name], b)
        jax.block_until_ready(states[name])

    def timed(name):
        return lambda: timed_window(lambda: one_pass(name), len(batches[name]))

    for name in steps:  # untimed: compiles every shape
        one_pass(name)
    res = alternate({n: timed(n) for n in steps}, windows)
    out = {"machine": machine_line(), "steps_per_window": {n: len(b) for n, b in batches.items()},
           "ms_per_step": {n: {k: spread([1e3 * getattr(t, k) for t in v]) for k in ("wall", "cpu")}
                           for n, v in res.items()},
           f"over_{baseline}": {n: {k: paired_ratios([getattr(t, k) for t in v], [getattr(t, k) for t in res[baseline]])
                                    for k in ("wall", "cpu")} for n, v in res.items() if n != baseline}}
    for n, r in out["ms_per_step"].items():
        log(f"{n}: wall {format_spread(r['wall'], '{:.0f}', ' ms')}; cpu {format_spread(r['cpu'], '{:.0f}', ' ms')} per step")
    for n, r in out[f"over_{baseline}"].items():
        for k, v in r.items():
            log(f"{n} / {baseline} {k}: {format_spread(v, '{:.3f}')}")
    log(out["machine"])
    return out


def step_times(summary: dict, points: list[dict], steps: int) -> dict:
    """Adds 'ms_per_step' {seed: training milliseconds per step} to each variant of `summary` (from
    the points at the last step that carry 'train_seconds'); returns `summary`."""
    for v, row in summary.items():
        last = [p for p in points if p["variant"] == v and p["step"] == steps and "train_seconds" in p]
        row["ms_per_step"] = {p["seed"]: 1000 * p["train_seconds"] / p["step"] for p in last}
    return summary


def steps_to_reach(points: list[dict], threshold: float, metric: str) -> float | None:
    """First step where `metric` <= threshold, interpolated linearly in log(metric) between
    evaluations; None if never reached."""
    prev = None
    for p in sorted(points, key=lambda p: p["step"]):
        if p[metric] <= threshold:
            if prev is None:
                return float(p["step"])
            la, lb, lt = np.log(prev[metric]), np.log(p[metric]), np.log(threshold)
            return float(prev["step"] + (p["step"] - prev["step"]) * (la - lt) / (la - lb))
        prev = p
    return None


def _stats(vals) -> dict:
    return {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals))}


FRACTIONS = (0.25, 0.5, 0.75)  # where along the baseline's run `summarize` also measures the speed-up


def _at_fraction(ps: list[dict], frac: float) -> dict:
    """The evaluation of one run nearest to `frac` of its last step."""
    last = max(p["step"] for p in ps)
    return min(ps, key=lambda p: abs(p["step"] - frac * last))


def last_quarter_fall(ps: list[dict], metric: str) -> float:
    """How much lower `metric` is at a run's last evaluation than at the one nearest 3/4 of its steps,
    as a fraction of the latter: the flatness check of a baseline (the benchmarks call < 0.10 flat)."""
    a, b = _at_fraction(ps, 0.75)[metric], max(ps, key=lambda p: p["step"])[metric]
    return float((a - b) / a)


def power_law_fit(ps: list[dict], metric: str, from_frac: float = 1 / 6, flat: float = 0.10) -> dict | None:
    """Least-squares fit of metric(t) = c + a * (t / 1000)^-b to one run's evaluations from
    `from_frac` of its steps on (the early transient left out), and what it projects: the run length
    at which the last quarter of the steps would fall by less than `flat` (`last_quarter_fall`'s
    criterion), searched up to 100x the run. {'c' (the asymptote), 'a', 'b', 'rms' (residual, metric
    units), 'c_err', 'b_err' (1-sigma), 'steps_to_flat' (None: beyond the search)}; None when the fit
    fails or there are fewer than 5 evaluations."""
    from scipy.optimize import curve_fit

    last = max(p["step"] for p in ps)
    pts = sorted((p["step"], p[metric]) for p in ps if p["step"] >= from_frac * last)
    if len(pts) < 5:
        return None
    t, y = (np.asarray(v, np.float64) for v in zip(*pts))
    f = lambda t, c, a, b: c + a * (t / 1000.0) ** -b
    try:
        (c, a, b), cov = curve_fit(f, t, y, p0=(float(y[-1]) / 2, float(y[0]), 1.0), maxfev=20000)
    except RuntimeError:
        return None
    grid = np.geomspace(last, 100 * last, 400)
    falls = 1 - f(grid, c, a, b) / f(0.75 * grid, c, a, b)
    err = np.sqrt(np.abs(np.diag(cov)))
    return {"c": float(c), "a": float(a), "b": float(b), "c_err": float(err[0]), "b_err": float(err[2]),
            "rms": float(np.sqrt(np.mean((f(t, c, a, b) - y) ** 2))),
            "steps_to_flat": float(grid[np.argmax(falls < flat)]) if (falls < flat).any() else None}


def summarize(points: list[dict], metric: str, baseline: str, extra: Sequence[str] = ()) -> dict:
    """Per variant: final `metric` (and `extra` metrics) per seed, the fall of `metric` over the last
    quarter of the steps per seed (`last_quarter_fall`), and, against the baseline of the same
    seed, the steps to reach its final value with the speed-up ratio (baseline steps / those
    steps), and the same ratio to its values at the `FRACTIONS` of its run ('speedup_at':
    {'0.25': {seed: ratio}, ...} with 'speedup_at_stats'), which are measured on steeper parts of
    its curve and depend less on one evaluation's noise."""
    by = {}
    for p in points:
        by.setdefault(p["variant"], {}).setdefault(p["seed"], []).append(p)
    final = lambda ps: max(ps, key=lambda p: p["step"])
    out = {}
    for v, seeds in by.items():
        row = {f"final_{k}": {s: final(ps)[k] for s, ps in seeds.items()} for k in (metric, *extra)}
        row["last_quarter_fall"] = {s: last_quarter_fall(ps, metric) for s, ps in seeds.items()}
        if baseline in by and v != baseline:
            reach, ratio, at = {}, {}, {str(f): {} for f in FRACTIONS}
            for s, ps in seeds.items():
                if s not in by[baseline]:
                    continue
                r = steps_to_reach(ps, final(by[baseline][s])[metric], metric)
                reach[s] = r
                ratio[s] = None if r is None else final(by[baseline][s])["step"] / r
                for f in FRACTIONS:
                    ref = _at_fraction(by[baseline][s], f)
                    r = steps_to_reach(ps, ref[metric], metric)
                    at[str(f)][s] = None if r is None else ref["step"] / r
            vals = [r for r in ratio.values() if r is not None]
            row[f"steps_to_{baseline}_final"] = reach
            row["speedup"] = ratio
            row["speedup_stats"] = (dict(_stats(vals), reached=f"{len(vals)}/{len(ratio)}") if vals
                                    else {"reached": f"0/{len(ratio)}"})
            row["speedup_at"] = at
            row["speedup_at_stats"] = {f: (dict(_stats(x), reached=f"{len(x)}/{len(r)}") if x
                                           else {"reached": f"0/{len(r)}"})
                                       for f, r in at.items() for x in [[y for y in r.values() if y is not None]]}
        for k in (metric, *extra):
            row[f"final_{k}_stats"] = _stats(list(row[f"final_{k}"].values()))
        out[v] = row
    return out


def plot(points: list[dict], path: str, title: str, metric: str, ylabel: str, order: Sequence[str],
         dashed: Sequence[str] = (), reference: tuple[float, str] | None = None) -> None:
    """`metric` against steps per variant: median over seeds with a min-max band, log scale;
    `reference` (value, label): a horizontal line (e.g. the metric's value on real data)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    variants = sorted({p["variant"] for p in points}, key=lambda v: list(order).index(v))
    for v in variants:
        steps = sorted({p["step"] for p in points if p["variant"] == v})
        table = np.array([[next((p[metric] for p in points if p["variant"] == v and p["step"] == s
                                 and p["seed"] == seed), np.nan) for s in steps]
                          for seed in sorted({p["seed"] for p in points if p["variant"] == v})])
        line, = ax.plot(steps, np.nanmedian(table, 0), marker="o", ms=3, label=f"{v} ({len(table)} seeds)",
                        ls="--" if v in dashed else "-")
        ax.fill_between(steps, np.nanmin(table, 0), np.nanmax(table, 0), color=line.get_color(), alpha=0.2)
    if reference is not None:
        ax.axhline(reference[0], color="k", ls=":", lw=1, label=reference[1])
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def stored_settings(workdir: str) -> dict | None:
    """The settings a benchmark in `workdir` was run with (None for a new workdir)."""
    path = os.path.join(workdir, "settings.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _first_length(settings: dict) -> int:
    """The run length of a benchmark's settings before any extension (its 'extended_from' record)."""
    return settings.get("extended_from", [settings["steps"]])[0]


def first_steps(workdir: str, steps: int) -> int:
    """The run length a benchmark in `workdir` was first made with, `steps` for a new one: what
    schedules tied to the run length (a warm-up fraction) must keep when the runs are extended."""
    old = stored_settings(workdir)
    return steps if old is None else _first_length(old)


def run(workdir: str, settings: dict, configs: dict, seeds: Sequence[int], steps: int,
        run_one: Callable[[str, object, dict, int], list[dict]], log=print, extend: bool = False
        ) -> tuple[list[dict], float]:
    """Run every (seed, variant) not yet finished in `workdir/points.jsonl` (resumable; settings
    must match the ones stored there); returns (all points, wall seconds of this invocation).

    `extend`: the stored settings may differ in 'steps' alone, a smaller one: the finished runs
    continue from their final states (`partial_path`) to `steps`, and the settings record
    'extended_from' (the earlier lengths). A run whose final state is gone starts again from step 0."""
    os.makedirs(workdir, exist_ok=True)
    settings_path = os.path.join(workdir, "settings.json")
    old = stored_settings(workdir)
    if old is not None:
        earlier = old.get("extended_from", []) + [old["steps"]]
        same = {k: v for k, v in old.items() if k not in ("steps", "extended_from")} == \
            {k: v for k, v in settings.items() if k not in ("steps", "extended_from")}
        if extend and same and steps > old["steps"]:
            settings = dict(settings, extended_from=earlier)
            log(f"{workdir}: extending the runs of {old['steps']} steps to {steps}")
        elif extend and same and steps == old["steps"]:
            settings = dict(settings, **({"extended_from": old["extended_from"]} if "extended_from" in old else {}))
        elif old != settings:
            raise SystemExit(f"{workdir} holds a benchmark with other settings ({settings_path}); "
                             + ("--extend needs the same settings and more steps" if extend
                                else "use another --workdir (existing results are not overwritten)"))
    with open(settings_path, "w") as fh:
        json.dump(settings, fh, indent=1)
    points_path = os.path.join(workdir, "points.jsonl")
    points = []
    if os.path.exists(points_path):
        with open(points_path) as fh:
            points = [json.loads(line) for line in fh if line.strip()]
    done = {(p["variant"], p["seed"]) for p in points if p["step"] == steps}
    t_start = time.time()
    for seed in seeds:
        inits = shared_init(configs, seed)
        for name, c in configs.items():
            if (name, seed) in done:
                log(f"{name} seed {seed}: already done, kept")
                continue
            c.seed = seed
            new = run_one(name, c, inits[name], seed)
            points = [p for p in points if (p["variant"], p["seed"]) != (name, seed)] + new
            write_points(points_path, points)  # whole file rewritten: a killed run leaves no partial seed
    wall = time.time() - t_start
    write_csv(os.path.join(workdir, "points.csv"), points)
    return points, wall


def write_points(path: str, points: list[dict]) -> None:
    """points.jsonl: one JSON point per line."""
    with open(path, "w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in points)


def write_csv(path: str, points: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for p in points for k in p)))  # final points add keys
        w.writeheader()
        w.writerows(points)


def _schedule(settings: dict) -> dict:
    """Settings as what the runs computed: an extended run and one made at full length from the
    start differ where a schedule follows the first length, so that length is part of it."""
    s = {k: v for k, v in settings.items() if k != "extended_from"}
    return dict(s, first_steps=_first_length(settings))


def merge(workdir: str, sources: Sequence[str], settings: dict, steps: int) -> list[dict]:
    """Gather the finished (variant, seed) runs of several workdirs of one benchmark (e.g. seeds run
    in parallel processes) into `workdir`'s points.jsonl and return all of its points. Every source
    must hold the same `settings` (its settings.json; runs extended from the same length count as the
    same), and a run finished in two places must have
    the same points there (else a SystemExit names the two places); unfinished runs are left out."""
    os.makedirs(workdir, exist_ok=True)
    merged: dict = {}
    order: list = []  # variants in the order they first appear (the benchmark's order)
    first = stored_settings(sources[0]) or {}
    if "extended_from" in first and "extended_from" not in settings:  # runs extended with --extend
        settings = dict(settings, extended_from=first["extended_from"])
    for src in [workdir, *sources]:
        sp, pp = os.path.join(src, "settings.json"), os.path.join(src, "points.jsonl")
        if not os.path.exists(pp):
            if src == workdir:
                continue
            raise SystemExit(f"--merge: {pp} does not exist")
        with open(sp) as fh:
            held = json.load(fh)
        if _schedule(held) != _schedule(settings):
            raise SystemExit(f"--merge: {sp} holds other settings than this command's; not merged")
        with open(pp) as fh:
            pts = [json.loads(line) for line in fh if line.strip()]
        order += [v for v in dict.fromkeys(p["variant"] for p in pts) if v not in order]
        for key in {(p["variant"], p["seed"]) for p in pts if p["step"] == steps}:
            run_pts = sorted((p for p in pts if (p["variant"], p["seed"]) == key), key=lambda p: p["step"])
            if key in merged and _metrics(merged[key][1]) != _metrics(run_pts):
                raise SystemExit(f"--merge: {key[0]} seed {key[1]} finished in both {merged[key][0]} and {src} "
                                 f"with other points")
            merged.setdefault(key, (src, run_pts))
    points = [p for _, (_, ps) in sorted(merged.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0])))
              for p in ps]
    with open(os.path.join(workdir, "settings.json"), "w") as fh:
        json.dump(settings, fh, indent=1)
    write_points(os.path.join(workdir, "points.jsonl"), points)
    write_csv(os.path.join(workdir, "points.csv"), points)
    return points


def _metrics(points: list[dict]) -> list[dict]:
    """A run's points without its clocks (two processes time the same run differently)."""
    return [{k: v for k, v in p.items() if k not in ("seconds", "train_seconds")} for p in points]


def speedup_cell(s: Mapping | None, per: str = "", baseline: str = "(baseline)",
                 all_reached_silent: bool = False) -> str:
    """One speed-up statistic (`_stats` of the per-seed ratios, with `reached` 'k/n') as text:
    '1.28x [1.22, 1.29] reached 3/3 (per)', 'not reached (0/3)', or `baseline` for None.
    `all_reached_silent` drops 'reached n/n' when every seed reached the target."""
    if s is None:
        return baseline
    if "median" not in s:
        return f"not reached ({s['reached']})"
    k, n = s["reached"].split("/")
    reached = "" if all_reached_silent and k == n else f" reached {s['reached']}"
    return f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}]{reached}" + (f" ({per})" if per else "")


def markdown_table(summary: dict, metric: str, baseline: str, extra: Sequence[str] = ()) -> str:
    """The summary as a markdown table: per variant the seeds, final `metric` median [min, max], the
    `extra` metrics' medians, the speed-up to the baseline's final value (median [min, max], how many
    seeds reached it, per seed) and the training ms per step."""
    head = ["variant", "seeds", f"final {metric}, median [min, max]", *[f"{k}, median" for k in extra],
            f"steps-to-{baseline}'s-final speed-up, median [min, max] (per seed)", "ms/step"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, row in summary.items():
        f = row[f"final_{metric}_stats"]
        cells = [v, str(len(row[f"final_{metric}"])), f"{f['median']:.2f} [{f['min']:.2f}, {f['max']:.2f}]"]
        cells += [f"{row[f'final_{k}_stats']['median']:.3f}" for k in extra]
        per = ", ".join(f"s{k}: {'-' if r is None else f'{r:.2f}x'}" for k, r in sorted(row.get("speedup", {}).items()))
        cells.append(speedup_cell(row.get("speedup_stats"), per=per))
        ms = list(row.get("ms_per_step", {}).values())
        cells.append(f"{np.median(ms):.0f}" if ms else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def markdown_speedups_at(summary: dict, baseline: str) -> str:
    """Per variant, the speed-up to the baseline's value at each fraction of its run and at its end
    (median [min, max] over seeds), and the baseline's last-quarter fall per seed (flatness)."""
    fr = [*map(str, FRACTIONS)]
    head = ["variant", *[f"to {baseline}'s value at {float(f):.0%} of its steps" for f in fr],
            f"to {baseline}'s final value"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell = functools.partial(speedup_cell, all_reached_silent=True)
    for v, row in summary.items():
        if "speedup_at" in row:
            rows.append("| " + " | ".join([v, *[cell(row["speedup_at_stats"][f]) for f in fr],
                                           cell(row["speedup_stats"])]) + " |")
    if baseline in summary:
        falls = summary[baseline]["last_quarter_fall"]
        rows.append(f"\n{baseline}'s fall over the last quarter of its steps: " + ", ".join(
            f"seed {s} {100 * x:.0f}%" for s, x in sorted(falls.items())) + " (flat: < 10%)")
    return "\n".join(rows) + "\n"


def report(summary: dict, metric: str, baseline: str, log=print) -> None:
    log(f"\n{'variant':15s} {'final ' + metric + ' (median [min, max])':38s} speed-up to {baseline}'s final value")
    for v, row in summary.items():
        f = row[f"final_{metric}_stats"]
        sp = speedup_cell(row.get("speedup_stats"), baseline="-")
        ms = list(row.get("ms_per_step", {}).values())
        ms = f"   {np.median(ms):.0f} ms/step" if ms else ""
        log(f"{v:15s} {f['median']:8.3f} [{f['min']:.3f}, {f['max']:.3f}]{'':14s} {sp}{ms}")
    log(markdown_speedups_at(summary, baseline))

# ----------------------------------------------------------------------------- speed benchmarks
# (bench/vs_torch.py, bench/input_pipeline.py, bench/accelerator.py): one parser, one load line,
# one way to summarise alternating windows.


def parser(doc: str):
    """The speed benchmarks' argparse parser: `doc` (the script's docstring, with its command) as
    the help text, and the flags every one of them takes (`--json`)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="also write every row to this JSON file")
    return ap


def machine_line() -> str:
    """What a timing ran on and under: UTC time, CPU count (schedulable / online), 1-5-15 min load
    averages, jax version and backend device."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cpus = f"{len(os.sched_getaffinity(0))}/{os.cpu_count()}"
    d = jax.devices()[0]
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; cpus {cpus}; load average {load}; "
            f"jax {jax.__version__} on {jax.device_count()} x {d.device_kind} ({d.platform})")


def spread(values: Sequence[float]) -> dict:
    """{'median', 'q1', 'q3', 'min', 'max', 'n'} of `values` (quartiles by linear interpolation)."""
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        raise ValueError("spread of no values")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size)}


def format_spread(s: Mapping, fmt: str = "{:.3f}", unit: str = "") -> str:
    """'median [IQR q1-q3; min-max] (n)' of a `spread` dict."""
    f = lambda x: fmt.format(x) + unit
    return f"{f(s['median'])} [IQR {f(s['q1'])}-{f(s['q3'])}; min-max {f(s['min'])}-{f(s['max'])}; n={s['n']}]"


def alternate(runners: Mapping[str, Callable[[], float]], windows: int, pause: float = 0.0,
              log: Callable | None = None) -> dict[str, list[float]]:
    """Run each runner once per window, in the order given, `windows` times (a, b, a, b, ...): machine
    noise hits every runner alike. A runner times one window itself and returns its seconds per
    unit (step, record, ...), or a `Timing`. `pause` seconds between runners let spinning worker
    threads settle. Returns {name: [what the runner returned, per window]}."""
    out = {n: [] for n in runners}
    for w in range(windows):
        for name, run in runners.items():
            if pause:
                time.sleep(pause)
            out[name].append(run())
            if log is not None:
                log(f"  window {w + 1}/{windows} {name}: {out[name][-1]}")
    return out


class Timing(tuple):
    """(wall seconds, CPU seconds) per unit of one window. CPU seconds (time.process_time: every
    thread of the process, user + system) do not count the time the process waited for a core,
    so on a shared, loaded machine they measure the work itself; wall seconds what a user waits."""

    def __new__(cls, wall: float, cpu: float):
        return super().__new__(cls, (float(wall), float(cpu)))

    wall = property(lambda self: self[0])
    cpu = property(lambda self: self[1])


def timed_window(fn: Callable[[], object], units: float) -> Timing:
    """Run `fn` once (it must block until its work is done) and return its Timing per unit."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return Timing((time.perf_counter() - w0) / units, (time.process_time() - c0) / units)


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> dict:
    """`spread` of num[i] / den[i] over windows run back to back (the per-window ratio, so slow
    phases of the machine cancel), plus the ratio of medians as 'of_medians'."""
    r = [a / b for a, b in zip(num, den)]
    return dict(spread(r), of_medians=float(np.median(num) / np.median(den)))


def write_rows(path: str | None, rows: list, meta: Mapping | None = None) -> None:
    """Write `{'meta': meta, 'rows': rows}` as JSON to `path` (nothing when path is None)."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"meta": dict(meta or {}), "rows": rows}, fh, indent=1)


def trace_top(trace_dir: str, n: int = 15) -> dict:
    """Top device/XLA ops of the newest jax.profiler trace under `trace_dir` (its trace.json.gz):
    {'ops': [(name, ms, calls)], 'kinds': [(kind, ms, calls)], 'total_ms'} by total duration, a kind
    being an op name without its '.N' suffix (dot, ynn_fusion, multiply_add_fusion, ...). Python
    frames and the executor's own spans are left out."""
    import collections
    import glob
    import gzip
    import re

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(paths[-1]) as fh:
        events = json.load(fh)["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    ops, kinds = collections.defaultdict(lambda: [0.0, 0]), collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") != "X" or threads.get((e["pid"], e.get("tid"))) == "python":
            continue
        name = e["name"]
        if name.startswith(("ThunkExecutor", "$", "PjitFunction", "Pjrt", "PjRt")):
            continue
        for table, key in ((ops, name), (kinds, re.sub(r"\.\d+$", "", name))):
            table[key][0] += e.get("dur", 0) / 1e3
            table[key][1] += 1
    top = lambda t: [(k, round(v[0], 3), v[1]) for k, v in sorted(t.items(), key=lambda kv: -kv[1][0])[:n]]
    return {"ops": top(ops), "kinds": top(kinds), "total_ms": round(sum(v[0] for v in ops.values()), 3),
            "trace": paths[-1]}


class Worker:
    """A persistent helper process under another Python (e.g. a torch venv without jax), spoken to in
    JSON lines: `ask(**msg)` writes one JSON object to its stdin and returns the one it answers; an
    answer with 'error' raises RuntimeError. The caller decides when it runs (never beside a timed
    window of its own). `argv`: the command; `env`: extra environment variables."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None):
        import subprocess

        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))

    def ask(self, **msg) -> dict:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"worker {' '.join(self.argv)} ended (exit {self.proc.wait()}); see its stderr above")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"worker {self.argv[-2] if len(self.argv) > 1 else self.argv[0]}: {out['error']}")
        return out

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()
