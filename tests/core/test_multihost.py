"""Multi-host for real: several `main.py` processes on this machine joined by jax.distributed (CPU,
gloo collectives) through launch/local_multihost.sh, against one process with as many devices."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config

from reed_jax import checkpoint, parallel, train
from reed_jax.data import buckets, pipeline, records

SCRIPT = os.path.join(ROOT, "launch", "local_multihost.sh")
# a digits SiT with FSDP over 2 of the 4 global devices (its 64 x 256 MLP kernels are sharded)
OVERRIDES = {"model.depth": 2, "model.hidden": 64, "model.heads": 2, "model.projector_width": 32,
             "targets.digits_tokens.tap": "block1", "targets.digits_pooled.tap": "block2", "mesh.fsdp": 2,
             "train.batch_size": 16, "train.log_every": 1, "train.eval_every": 1000, "train.checkpoint_every": 2,
             "sample.num_steps": 2, "sample.batch_size": 20, "sample.grid_per_class": 2, "eval.num_samples": 20,
             "curriculum.gen.warmup": 0}


def config(shards, steps):
    c = load_config("demo", "reed")
    for k, v in dict(OVERRIDES, **{"train.steps": steps}).items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    c.data.dir = shards
    return c


def launch(n, devices, wd, shards, steps, *, env=None, wait=True):
    flags = [f"--config.{k}={v}" for k, v in dict(OVERRIDES, **{"train.steps": steps}).items()]
    cmd = ["bash", SCRIPT, str(n), "configs/demo.py:reed", str(wd), f"--config.data.dir={shards}", *flags]
    e = dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES=str(devices), GRACE="20", **(env or {}))
    e.pop("XLA_FLAGS", None)
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=900)
    return r.returncode, logs(wd)


def logs(wd):
    out = {}
    for f in sorted(os.listdir(os.path.join(wd, "logs"))):
        out[f] = open(os.path.join(wd, "logs", f)).read()
    return out


def params_at(c, wd):
    model, tx = train.build_model(c), train.make_optimizer(c)
    abstract = train.abstract_state(c, model, tx)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # saved over 4 devices, read onto this one
    abstract = parallel.with_shardings(abstract, jax.tree.map(lambda _: one, abstract))
    return checkpoint.restore(checkpoint.manager(str(wd)), abstract)


def assert_same_state(a, b):
    assert int(a.step) == int(b.step)
    for x, y in zip(jax.tree.leaves((a.params, a.ema_params, a.opt_state)),
                    jax.tree.leaves((b.params, b.ema_params, b.opt_state))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


# ----------------------------------------------------------------------------- cheap, in-process

@pytest.mark.parametrize("n", [1, 2, 4])
def test_global_batches_are_the_same_for_every_process_count(n):
    src = list(range(53))
    ref = pipeline.GlobalBatches([{"i": np.int64(i)} for i in src], 8, seed=3)
    its = [pipeline.GlobalBatches([{"i": np.int64(i)} for i in src], 8, seed=3, shard_index=p, shard_count=n)
           for p in range(n)]
    for _ in range(14):  # past an epoch boundary (6 batches per epoch)
        want = next(ref)["i"]
        parts = [next(it)["i"] for it in its]
        assert all(len(p) == 8 // n for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), want)  # the same global batch, in order
        assert len(set(np.concatenate(parts))) == 8  # disjoint slices
    state = its[0].get_state()  # a state saved by n processes resumes on another count
    other = pipeline.GlobalBatches([{"i": np.int64(i)} for i in src], 8, seed=3, shard_index=0, shard_count=1)
    other.set_state(state)
    np.testing.assert_array_equal(next(other)["i"], next(ref)["i"])
    with pytest.raises(records.DataError, match="seed 3; this run has 53 records and seed 4"):
        pipeline.GlobalBatches([{"i": 0}] * 53, 8, seed=4).set_state(state)


def test_bucket_iterators_under_two_processes():
    """Proteins/molecules: every process draws the same bucket at every step, the slices are
    disjoint and together are the one-process batch, and the state resumes on any process count."""
    lengths = np.array([5, 9, 12, 3, 15, 16, 7, 11, 2, 14, 8, 6, 13, 4, 10, 1] * 3)
    src = [{"x": np.full((16,), i, np.int32), "mask": (np.arange(16) < lengths[i]).astype(np.float32)}
           for i in range(len(lengths))]
    schema = records.Schema((records.Field("x", (16,), "int32"), records.Field("mask", (16,), "float32")))
    make = lambda p, n: buckets.BucketIterator(src, schema, lengths, (8, 16), ["x", "mask"], 4 // n, seed=1,
                                               shard_index=p, shard_count=n)
    one, two = make(0, 1), [make(0, 2), make(1, 2)]
    for _ in range(10):
        want = next(one)
        parts = [next(it) for it in two]
        assert parts[0]["x"].shape == parts[1]["x"].shape == (2, want["x"].shape[1])  # same bucket
        got = np.concatenate([p["x"][:, 0] for p in parts])
        assert sorted(got) == sorted(want["x"][:, 0]) and len(set(got)) == 4
    resumed = make(1, 2)
    resumed.set_state(one.get_state())
    nxt = next(one)
    assert set(next(resumed)["x"][:, 0]) <= set(nxt["x"][:, 0])


def test_distributed_flags_and_environment():
    sys.path.insert(0, ROOT)
    import main

    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert main.distributed_args({}, env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                              "process_id": 3}
    assert main.distributed_args({"process_id": 1, "coordinator_address": None}, env)["process_id"] == 1  # flag wins
    assert main.distributed_args({}, {}) == {}  # left to JAX's auto-detection (TPU VM, SLURM)
    with pytest.raises(Exception, match="--process_id=4 is outside 0..--num_processes-1=3"):
        main.distributed_args({"process_id": 4}, env)


def test_local_multihost_dry_run():
    r = subprocess.run(["bash", SCRIPT, "3", "configs/demo.py", "/tmp/w", "--config.train.steps=5"], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, DRY_RUN="1", PORT="4321"), timeout=60)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 3, r.stderr
    for i, line in enumerate(lines):
        assert "JAX_PLATFORMS=cpu" in line and "--xla_force_host_platform_device_count=2" in line
        assert (f"main.py --multihost --coordinator_address=127.0.0.1:4321 --num_processes=3 --process_id={i} "
                f"--config=configs/demo.py --workdir=/tmp/w --mode=train --config.train.steps=5") in line
    assert subprocess.run(["bash", SCRIPT, "x", "c", "w"], cwd=ROOT, capture_output=True).returncode == 2


# ----------------------------------------------------------------------------- real processes

def _wait_for_step(wd, step, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (checkpoint.manager(str(wd)).latest_step() or 0) >= step:  # older ones may be gone (keep=3)
            return
        if proc.poll() is not None:
            raise AssertionError(f"launcher ended early: {proc.stdout.read()}\n{logs(wd)}")
        time.sleep(1)
    raise AssertionError(f"no checkpoint {step} in {wd} after {timeout} s: {logs(wd)}")


def worker_pid(wd, i) -> int:
    """The pid of the main.py process with --process_id=i on workdir `wd`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline").read().split("\0")
        except OSError:
            continue
        if any(a.endswith("main.py") for a in args) and f"--workdir={wd}" in args and f"--process_id={i}" in args:
            return int(pid)
    raise AssertionError(f"no process {i} on {wd}")


def saved_steps(out: dict) -> list[int]:
    """The steps of every process's "signal ...: saved step N" line."""
    return [int(l.split("saved step ")[1].split()[0]) for log in out.values() for l in log.splitlines()
            if "saved step" in l]


def evaluate(n, devices, wd, shards, extra):
    """--mode=evaluate of `wd`'s checkpoint on n processes x `devices` devices; (metrics, eval dir)."""
    cmd = ["bash", SCRIPT, str(n), "configs/demo.py:reed", str(wd), f"--config.data.dir={shards}",
           *[f"--config.{k}={v}" for k, v in dict(OVERRIDES, **{"train.steps": 4}).items()], *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES=str(devices), MODE="evaluate"))
    assert r.returncode == 0, (r.stderr, logs(wd))
    (tag,) = [d for d in os.listdir(wd / "eval") if d.startswith("step")]
    return json.load(open(wd / "eval" / tag / "metrics.json")), wd / "eval" / tag


def test_processes_train_evaluate_stop_and_resume_like_one(digits_shards, tmp_path):
    """One scenario over real processes (8 launches; each costs a JAX start and a compile):
    1 x 4 and 2 x 2 devices train the same 4 steps; --mode=evaluate on 2 processes matches 1 and
    resumes batch by batch; a SIGTERM to one process stops both at one saved step; the two
    checkpoints resume across process counts (1-process one on 2, 2-process one on 1) to the same
    state; a kill -9 of one process stops the other and a relaunch resumes both at one step."""
    import shutil

    from reed_jax.image import digits, fid_eval, inception

    one, two = tmp_path / "one", tmp_path / "two"
    for n, devices, wd in ((1, 4, one), (2, 2, two)):
        rc, out = launch(n, devices, wd, digits_shards, 4)
        assert rc == 0, out
    c = config(digits_shards, 4)
    a, _ = params_at(c, one)
    b, _ = params_at(c, two)
    print(f"1 x 4 vs 2 x 2 devices after 4 steps: max |param difference| {max_abs_diff(a, b):.2e}")
    assert_same_state(a, b)
    # only process 0 writes TensorBoard (one event file); results.json and the grid exist
    events = [f for _, _, fs in os.walk(two / "tensorboard") for f in fs if "tfevents" in f]
    assert len(events) == 1 and os.path.exists(two / "results.json") and os.listdir(two / "samples")

    # evaluation of the 2-process step-4 checkpoint: 1 process x 4 devices writes both batches;
    # 2 x 2 starts from a copy of its first batch file only (a run killed after one batch), computes
    # the second and scores all: the same samples and FID/sFID/IS/P&R
    inc, ref = str(tmp_path / "inception.npz"), str(tmp_path / "ref.npz")
    fid_eval.save_inception_params(inception.init_params(0, size=75), inc)
    fid_eval.write_reference(fid_eval.to_rgb_uint8(digits.load()[0][:32]), ref,
                             fid_eval.Extractor(fid_eval.load_inception_params(inc), batch_size=8, size=75))
    flags = dict(inception_path=inc, reference=ref, fid_samples=16, fid_batch_size=8, inception_batch_size=8,
                 inception_size=75, save_npz=True, frechet_method="eigh")
    extra = [f"--config.eval.{k}={v}" for k, v in flags.items()]
    ev1, ev2 = tmp_path / "ev1", tmp_path / "ev2"
    shutil.copytree(two, ev1)
    shutil.copytree(two, ev2)
    m1, d1 = evaluate(1, 4, ev1, digits_shards, extra)
    os.makedirs(ev2 / "eval" / d1.name / "batches")
    shutil.copy(d1 / "batches" / "batch_00000.npz", ev2 / "eval" / d1.name / "batches")
    m2, d2 = evaluate(2, 2, ev2, digits_shards, extra)
    assert "resuming: 1 of 2 batches already done" in logs(ev2)["process_0.log"], logs(ev2)
    with np.load(d1 / "batches" / "batch_00001.npz") as f1, np.load(d2 / "batches" / "batch_00001.npz") as f2:
        s1, s2 = f1["images"], f2["images"]  # the batch each process count sampled itself
        assert s1.shape == (8, 8, 8, 3) and np.mean(s1 != s2) < 0.01, np.mean(s1 != s2)
        np.testing.assert_allclose(f1["pool_3"], f2["pool_3"], rtol=1e-3, atol=1e-3)
    assert np.load(d2 / "samples.npz")["arr_0"].shape == (16, 8, 8, 3)
    for k in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert m1[k] == pytest.approx(m2[k], rel=1e-3, abs=1e-3), (k, m1[k], m2[k])

    # the 1-process checkpoint resumes on 2 processes; SIGTERM to process 1 only stops both at one step
    p = launch(2, 2, one, digits_shards, 400, wait=False)
    _wait_for_step(one, 6, p)
    os.kill(worker_pid(one, 1), signal.SIGTERM)
    p.communicate(timeout=600)
    out = logs(one)
    assert p.returncode == 0 and all("resumed from" in log and "at step 4" in log for log in out.values()), out
    steps = saved_steps(out)
    assert len(steps) == 2 and steps[0] == steps[1] == checkpoint.manager(str(one)).latest_step(), out
    step = steps[0]
    # the 2-process checkpoint resumes on 1 process to that step: the same state
    rc, out = launch(1, 4, two, digits_shards, step)
    assert rc == 0 and "at step 4" in out["process_0.log"], out
    a, _ = params_at(config(digits_shards, step), one)
    b, _ = params_at(config(digits_shards, step), two)
    print(f"after the cross resumes (step {step}): max |param difference| {max_abs_diff(a, b):.2e}")
    assert_same_state(a, b)

    # kill -9 one process mid-run: the launcher stops the other; a relaunch resumes both at one step
    p = launch(2, 2, one, digits_shards, step + 400, wait=False)
    _wait_for_step(one, step + 2, p)
    os.kill(worker_pid(one, 1), signal.SIGKILL)
    p.communicate(timeout=600)
    assert p.returncode != 0
    last = checkpoint.manager(str(one)).latest_step()
    rc, out = launch(2, 2, one, digits_shards, last + 2)
    assert rc == 0, out
    resumed = [l for log in out.values() for l in log.splitlines() if l.startswith("resumed from")]
    assert len(resumed) == 2 and all(f"at step {last}" in l for l in resumed), resumed
    assert checkpoint.manager(str(one)).latest_step() == last + 2
