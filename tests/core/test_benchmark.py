"""reed_jax/benchmark.py: an interrupted (variant, seed) run resumes from its last evaluation and
gives the points of an uninterrupted run; a checkpoint that does not fit the state is refused."""
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax import benchmark


def _batches(seed):
    return benchmark.batches({"x": np.arange(40, dtype=np.float32).reshape(20, 2)}, 4, seed)


def _step(state, batch):
    """A toy step whose result depends on every batch and its order (a running product-sum)."""
    w = state["w"] * 0.9 + jnp.asarray(batch["x"]).sum(0)
    return {"w": w, "n": state["n"] + 1}, {"loss/gen": w.sum()}


def _run(path, evaluate, steps=10):
    state = {"w": jnp.zeros(2, jnp.float32), "n": jnp.zeros((), jnp.int32)}
    return benchmark.train_and_evaluate("toy", 0, state, _batches(0), _step, steps, 3, evaluate,
                                        log=lambda *_: None, checkpoint=path)


def _score(state, step):
    return {"w0": float(state["w"][0]), "n": int(state["n"])}


def _strip(points):
    return [{k: v for k, v in p.items() if k not in ("seconds", "train_seconds")} for p in points]


def test_interrupted_run_resumes_with_the_same_points(tmp_path):
    whole = _run(None, _score)
    path = str(tmp_path / "partial" / "toy_seed0.npz")

    def dies_at_9(state, step):
        if step == 9:
            raise KeyboardInterrupt
        return _score(state, step)

    with pytest.raises(KeyboardInterrupt):
        _run(path, dies_at_9)
    with np.load(path) as z:  # the state after step 6, the last evaluation before the interruption
        assert int(z["leaf_0"]) == 6
    resumed = _run(path, _score)
    assert [p["step"] for p in resumed] == [3, 6, 9, 10]
    assert _strip(resumed) == _strip(whole)
    with np.load(path) as z:  # kept once finished: the final state
        assert int(z["leaf_0"]) == 10
    # a longer run continues from it and gives the points of one run of that length from the start
    # (plus the evaluation at the first run's last step, 10, which is no multiple of eval_every)
    longer = _run(path, _score, steps=16)
    assert [p["step"] for p in longer] == [3, 6, 9, 10, 12, 15, 16]
    assert _strip(longer[:3] + longer[4:]) == _strip(_run(None, _score, steps=16))
    with pytest.raises(ValueError, match="past this run's 10 steps"):
        _run(path, _score, steps=10)


def test_run_extends_finished_runs_and_merge_tells_them_from_full_length_runs(tmp_path, monkeypatch):
    """`run(..., extend=True)` continues finished runs to more steps from their final states, records
    the first length (what a warm-up fraction must keep), and refuses other settings; a plain run
    with other steps is refused; merge refuses to mix extended runs with full-length ones."""
    import types
    monkeypatch.setattr(benchmark, "shared_init", lambda configs, seed: {n: None for n in configs})

    def run(wd, steps, extend=False, settings=None):
        def one(name, c, params, seed):
            state = {"w": jnp.zeros(2, jnp.float32), "n": jnp.zeros((), jnp.int32)}
            return benchmark.train_and_evaluate(name, seed, state, _batches(seed), _step, steps, 3, _score,
                                                log=lambda *_: None,
                                                checkpoint=benchmark.partial_path(wd, name, seed))
        return benchmark.run(wd, settings or {"steps": steps, "lr": 1.0}, {"toy": types.SimpleNamespace()},
                             [0, 1], steps, one, log=lambda *_: None, extend=extend)[0]

    short, full = str(tmp_path / "short"), str(tmp_path / "full")
    run(short, 10)
    with pytest.raises(SystemExit, match="other settings"):
        run(short, 16)  # without --extend
    with pytest.raises(SystemExit, match="--extend needs the same settings"):
        run(short, 16, extend=True, settings={"steps": 16, "lr": 2.0})
    extended = [p for p in run(short, 16, extend=True) if p["step"] != 10]
    assert _strip(extended) == _strip(run(full, 16)) and len(extended) == 2 * 6
    assert benchmark.stored_settings(short)["extended_from"] == [10]
    assert benchmark.first_steps(short, 16) == 10 and benchmark.first_steps(full, 16) == 16
    with pytest.raises(SystemExit, match="other settings"):
        benchmark.merge(str(tmp_path / "m"), [short, full], {"steps": 16, "lr": 1.0}, 16)
    assert len(benchmark.merge(str(tmp_path / "m2"), [short], {"steps": 16, "lr": 1.0}, 16)) == 2 * 7


def test_checkpoint_of_another_state_is_refused(tmp_path):
    path = str(tmp_path / "p.npz")
    benchmark._save_partial(path, {"n": jnp.zeros((), jnp.int32), "w": jnp.zeros(3, jnp.float32)}, 3, [], 0.0, 0.0)
    with pytest.raises(ValueError, match=r"leaf_1 is float32\[3\], the state's is float32\[2\]"):
        _run(path, _score)


def _curve(variant, seed, scale, steps=(100, 200, 300, 400)):
    """Points of a run whose metric is 100 * scale / step (a variant with scale < 1 is ahead)."""
    return [{"variant": variant, "seed": seed, "step": s, "fd": 100.0 * scale * 100 / s} for s in steps]


def test_summarize_speedups_at_fractions_and_flatness():
    pts = _curve("sit", 0, 1.0) + _curve("reed", 0, 0.5)
    s = benchmark.summarize(pts, "fd", "sit")
    # reed's fd is sit's at half the steps: 2x to every value of sit's (log-interpolated, exact here)
    assert s["reed"]["speedup"][0] == pytest.approx(2.0)
    assert s["reed"]["speedup_at"]["0.5"][0] == pytest.approx(2.0)  # sit's step-200 value at reed step 100
    assert s["reed"]["speedup_at"]["0.25"][0] == pytest.approx(1.0)  # sit's step-100 value: reached at reed's first eval
    # sit's step-300 value (33.3) falls between reed's evaluations: interpolated in log(metric)
    reached = 100 + 100 * np.log(50 / (100 / 3)) / np.log(2)
    assert s["reed"]["speedup_at_stats"]["0.75"]["median"] == pytest.approx(300 / reached)
    assert s["sit"]["last_quarter_fall"][0] == pytest.approx(0.25)  # 100/3 -> 25: step 300 -> 400
    table = benchmark.markdown_speedups_at(s, "sit")
    assert "| reed | 1.00x [1.00, 1.00] | 2.00x [2.00, 2.00] | 1.89x [1.89, 1.89] | 2.00x [2.00, 2.00] |" in table
    assert "seed 0 25%" in table
    # the same cells in the per-variant table and the log report (one formatter)
    assert "| 2.00x [2.00, 2.00] reached 1/1 (s0: 2.00x) |" in benchmark.markdown_table(s, "fd", "sit")
    lines = []
    benchmark.report(s, "fd", "sit", log=lines.append)
    assert any(line.startswith("reed") and "2.00x [2.00, 2.00] reached 1/1" in line for line in lines)
    late = benchmark.summarize(_curve("sit", 0, 1.0) + _curve("reed", 0, 2.0), "fd", "sit")["reed"]
    assert benchmark.speedup_cell(late["speedup_stats"]) == "not reached (0/1)"


def _workdir(path, settings, points):
    import json
    path.mkdir()
    (path / "settings.json").write_text(json.dumps(settings))
    (path / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    return str(path)


def test_merge_gathers_finished_runs_and_refuses_conflicts(tmp_path):
    st = {"steps": 400}
    a = _workdir(tmp_path / "a", st, _curve("sit", 0, 1.0) + _curve("reed", 0, 0.5) + _curve("sit", 1, 1.0)[:2])
    b = _workdir(tmp_path / "b", st, _curve("sit", 1, 1.1) + _curve("reed", 1, 0.6))
    pts = benchmark.merge(str(tmp_path / "m"), [a, b], st, 400)
    assert [(p["variant"], p["seed"]) for p in pts if p["step"] == 400] == [
        ("sit", 0), ("reed", 0), ("sit", 1), ("reed", 1)]  # a's unfinished sit seed 1 is b's finished one
    assert len(pts) == 16 and (tmp_path / "m" / "points.csv").exists()
    c = _workdir(tmp_path / "c", st, _curve("reed", 1, 0.7))
    with pytest.raises(SystemExit, match="reed seed 1 finished in both"):
        benchmark.merge(str(tmp_path / "m2"), [a, b, c], st, 400)
    d = _workdir(tmp_path / "d", {"steps": 300}, [])
    with pytest.raises(SystemExit, match="other settings"):
        benchmark.merge(str(tmp_path / "m3"), [a, d], st, 400)


def test_time_train_steps_compiles_first_then_alternates(monkeypatch):
    """Every batch runs once before timing; then one window per variant in turn (a, b, a, b); the
    ratio to the baseline is taken per window (so a slow phase of the machine cancels)."""
    calls = []

    def step(name):
        def fn(state, batch):
            calls.append((name, batch["i"]))
            return state + 1, {}
        return fn

    clock = iter([1.0, 2.0, 3.0, 8.0])  # the windows' seconds per step, in run order: a, b, a, b
    monkeypatch.setattr(benchmark, "timed_window", lambda go, units: (go(), benchmark.Timing(next(clock), 0.5))[1])
    batches = [{"i": 0}, {"i": 1}]
    out = benchmark.time_train_steps({"a": step("a"), "b": step("b")}, {"a": 0, "b": 0},
                                     {"a": batches, "b": batches}, 2, "a", log=lambda *_: None)
    assert calls == [("a", 0), ("a", 1), ("b", 0), ("b", 1)] + [("a", 0), ("a", 1), ("b", 0), ("b", 1)] * 2
    assert out["ms_per_step"]["a"]["wall"]["median"] == pytest.approx(2000.0)
    r = out["over_a"]["b"]["wall"]
    assert (r["min"], r["max"]) == pytest.approx((2.0, 8.0 / 3.0))  # per window: 2/1, 8/3
    assert r["of_medians"] == pytest.approx(5.0 / 2.0)
    assert out["over_a"]["b"]["cpu"]["median"] == pytest.approx(1.0)


def test_power_law_fit_recovers_the_curve_and_projects_flatness():
    """Points on 12 + 60 (t/1000)^-1 are fitted back, and the projected flat length is where the
    exact curve's last-quarter fall crosses 10% (solved here in closed form)."""
    pts = [{"step": s, "fd": 12 + 60 * (s / 1000) ** -1.0} for s in range(250, 6001, 250)]
    fit = benchmark.power_law_fit(pts, "fd")
    assert (fit["c"], fit["a"], fit["b"]) == pytest.approx((12, 60, 1.0), rel=1e-4)
    # fall(T) = 1 - (12 + 60000/T) / (12 + 80000/T) < 0.1  <=>  T > (80000 * 0.9 - 60000) / (12 * 0.1)
    exact = (80000 * 0.9 - 60000) / 1.2
    assert fit["steps_to_flat"] == pytest.approx(exact, rel=0.02)
    assert benchmark.last_quarter_fall(pts, "fd") > 0.1  # not flat at 6,000 steps yet
    assert benchmark.power_law_fit(pts[:4], "fd") is None
