"""Work is never lost: one trainer per workdir, corrupt checkpoints skipped, no checkpoint inside a
streak of skipped steps, atomic results, save errors surfaced, Ctrl-C saves, bad numbers named."""
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from reed_jax import checkpoint, config as config_lib, lock, logs, tracks, train
from reed_jax.image import track as image_track


@pytest.fixture(autouse=True)
def _no_sampling_eval(monkeypatch):
    """These tests are about the loop's bookkeeping: the periodic evaluation is a stub (no sampler
    compile, no digits-FD), which results.json still records."""
    monkeypatch.setattr(image_track, "evaluations", lambda config, workdir, data_dir, model, mesh, log=print: [
        tracks.Evaluation("eval", config.train.eval_every, lambda params, step: ({"step": step}, None))])


def _config(shards, **train_kw):
    c = tiny_config("sit")  # no targets: the cheapest model that runs the whole loop
    c.data.dir = shards
    c.train.update(**train_kw)
    c.eval.num_samples = 20
    return c


def run(c, wd, log=lambda *_: None):
    return train.train_and_evaluate(c, str(wd), log=log)


def steps_in(wd):
    return checkpoint.manager(str(wd)).all_steps()


def restored(c, wd):
    model, tx = train.build_model(c), train.make_optimizer(c)
    return checkpoint.restore(checkpoint.manager(str(wd)), train.abstract_state(c, model, tx))


# ----------------------------------------------------------------------------- one trainer per workdir

def test_second_trainer_on_a_workdir_stops_naming_the_holder(digits_shards, tmp_path):
    c = _config(digits_shards, steps=3, checkpoint_every=3, eval_every=3)
    with lock.WorkdirLock(str(tmp_path)):
        with pytest.raises(lock.WorkdirBusy, match=rf"workdir '{tmp_path}' is in use by another run \(pid "
                                                   rf"{os.getpid()} on host"):
            run(c, tmp_path)
        assert steps_in(tmp_path) == [] and not os.path.exists(tmp_path / "results.json")
    run(c, tmp_path)  # released: the next trainer runs
    assert steps_in(tmp_path) == [3]


def test_lock_is_held_across_processes_and_dropped_by_kill(tmp_path):
    """A real second process holding the lock blocks us; killing it (-9) frees the workdir."""
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r}); from reed_jax import lock\n"
            f"with lock.WorkdirLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(lock.WorkdirBusy, match=f"pid {p.pid}"):
            with lock.WorkdirLock(str(tmp_path)):
                pass
    finally:
        p.kill()
        p.wait()
    with lock.WorkdirLock(str(tmp_path)):
        pass


# ----------------------------------------------------------------------------- corrupt checkpoints

def test_non_finite_checkpoint_is_skipped_and_the_older_one_resumed(digits_shards, tmp_path):
    c = _config(digits_shards, steps=6, checkpoint_every=3, eval_every=6)
    run(c, tmp_path)
    assert steps_in(tmp_path) == [3, 6]
    state, meta = restored(c, tmp_path)
    # a checkpoint whose bytes decode to NaN (what flipped bytes in an uncompressed chunk give)
    bad = state.replace(step=jnp.asarray(9, jnp.int32),
                        params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params))
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, 9, bad, meta)
    mngr.wait_until_finished()
    logged = []
    c.train.steps = 8
    run(c, tmp_path, logged.append)
    assert any("checkpoint step 9" in m and "non-finite" in m and "checkpoints_skipped" in m for m in logged), logged
    assert any(m.startswith("resumed from") and "at step 6" in m for m in logged), logged
    assert steps_in(tmp_path) == [3, 6, 8]
    assert [d.split(".")[0] for d in os.listdir(tmp_path / "checkpoints_skipped")] == ["9"]  # kept, not deleted


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_checkpoint_files_fall_back(digits_shards, tmp_path, damage):
    c = _config(digits_shards, steps=6, checkpoint_every=3, eval_every=6)
    run(c, tmp_path)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "checkpoints" / "6" / "state") for f in fs)
    files = [f for f in files if os.path.getsize(f) > 64]
    assert files
    for f in files:
        if damage == "delete":
            os.remove(f)
        else:
            data = bytearray(open(f, "rb").read())
            if damage == "flip":
                for i in range(16, len(data), 7):
                    data[i] ^= 0xFF
            open(f, "wb").write(data if damage == "flip" else data[:len(data) // 2])
    logged = []
    c.train.steps = 7
    run(c, tmp_path, logged.append)
    assert any("checkpoint step 6" in m and "unusable" in m for m in logged), logged
    assert any(m.startswith("resumed from") and "at step 3" in m for m in logged), logged
    assert steps_in(tmp_path) == [3, 6, 7]  # step 6 trained again from 3 and saved anew
    state, _ = restored(c, tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


def test_every_checkpoint_bad_is_refused_and_nothing_moved(digits_shards, tmp_path):
    c = _config(digits_shards, steps=3, checkpoint_every=3, eval_every=3)
    run(c, tmp_path)
    for d, _, fs in os.walk(tmp_path / "checkpoints" / "3" / "state"):
        for f in fs:
            os.remove(os.path.join(d, f))
    with pytest.raises(checkpoint.NoGoodCheckpoint, match="all left in place.*step 3: it does not restore"):
        run(c, tmp_path)
    assert steps_in(tmp_path) == [3] and not os.listdir(tmp_path / "checkpoints_skipped")


# ----------------------------------------------------------------------------- skipped steps

def test_no_checkpoint_inside_a_streak_of_skipped_steps(digits_shards, tmp_path, monkeypatch):
    c = _config(digits_shards, steps=3, checkpoint_every=1, eval_every=3, log_every=1, max_consecutive_skips=3)
    run(c, tmp_path)
    assert steps_in(tmp_path) == [1, 2, 3]
    real = image_track.losses

    def diverged(*a):
        gen, align, t = real(*a)
        return gen * jnp.nan, align, t

    monkeypatch.setattr(image_track, "losses", diverged)
    c.train.steps = 10
    with pytest.raises(train.NonFiniteError, match="stopped at step 6: 3 consecutive .* last checkpoint saved "
                                                   "without skips: step 3"):
        run(c, tmp_path)
    assert steps_in(tmp_path) == [1, 2, 3]  # steps 4-6 were skipped: none of them saved


# ----------------------------------------------------------------------------- results.json

def test_results_are_written_atomically_and_a_torn_file_is_named(digits_shards, tmp_path, monkeypatch):
    path = str(tmp_path / "r.json")
    logs.write_json(path, {"a": 1})

    def torn(obj, fh, **kw):
        fh.write('{"a": ')
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dump", torn)
    with pytest.raises(OSError, match="No space"):
        logs.write_json(path, {"a": 2})
    monkeypatch.undo()
    assert json.load(open(path)) == {"a": 1}  # the old file, whole

    c = _config(digits_shards, steps=3, checkpoint_every=3, eval_every=3)
    run(c, tmp_path / "w")
    results = tmp_path / "w" / "results.json"
    results.write_text(results.read_text()[:20])
    c.train.steps = 4
    with pytest.raises(ValueError, match=f"{results} .*evaluation history.* is not valid JSON"):
        run(c, tmp_path / "w")


# ----------------------------------------------------------------------------- save errors

def test_checkpoint_directory_must_be_writable(tmp_path):
    mngr = checkpoint.manager(str(tmp_path))
    os.rmdir(tmp_path / "checkpoints")
    (tmp_path / "checkpoints").write_text("not a directory")
    with pytest.raises(OSError, match=f"checkpoint directory {tmp_path / 'checkpoints'} is not writable"):
        checkpoint.check_writable(mngr)


def test_failed_async_save_is_reported_at_the_next_log_step(digits_shards, tmp_path, monkeypatch):
    """An asynchronous save that failed (here: orbax reports ENOSPC) stops the run at the next log
    step with the checkpoint directory named, before another save is attempted."""
    c = _config(digits_shards, steps=6, checkpoint_every=2, eval_every=6, log_every=3)
    saves = []
    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda mngr, step, *a, **k: (saves.append(step),
                                                                        real_save(mngr, step, *a, **k)))

    def failing(self):
        if self.latest_step() is not None or saves:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(checkpoint.manager(str(tmp_path / "probe"))), "check_for_errors", failing)
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match=f"saving a checkpoint to {tmp_path / 'w' / 'checkpoints'} failed: OSError"):
        run(c, tmp_path / "w")
    assert saves == [2]  # stopped at step 3's log, before the step-4 save


# ----------------------------------------------------------------------------- signals

def test_ctrl_c_saves_and_exits_like_sigterm(digits_shards, tmp_path):
    c = _config(digits_shards, steps=4, checkpoint_every=4, eval_every=4)

    def interrupt(msg):
        if msg.startswith("model "):
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN under a background `cmd &`
    assert run(c, tmp_path, interrupt) == {}
    assert steps_in(tmp_path) == [1]
    assert signal.getsignal(signal.SIGINT) is before  # restored
    run(c, tmp_path)
    assert steps_in(tmp_path) == [1, 4]


# ----------------------------------------------------------------------------- bad numbers, changed config

@pytest.mark.parametrize("key,value,match", [
    ("lr", -1e-3, "optim.lr=-0.001 must be finite and > 0"),
    ("lr", float("nan"), "optim.lr=nan must be finite"),
    ("lr", float("inf"), "optim.lr=inf must be finite"),
    ("grad_clip", -1.0, "optim.grad_clip=-1.0 must be > 0"),
    ("grad_clip", 0.0, "optim.grad_clip=0.0 must be > 0"),
    ("b1", 1.0, r"optim.b1=1.0 must be in \[0, 1\)"),
    ("b2", 1.0, r"optim.b2=1.0 must be in \[0, 1\)"),
    ("eps", 0.0, "optim.eps=0.0 must be finite and > 0"),
    ("weight_decay", -0.1, "optim.weight_decay=-0.1 must be finite and >= 0"),
    ("warmup_steps", -5, "optim.warmup_steps=-5 must be an integer >= 0"),
    ("ema_decay", 1.0, r"optim.ema_decay=1.0 must be in \[0, 1\)"),
])
def test_optimiser_values_are_validated_by_key(key, value, match):
    c = tiny_config("reed")
    c.optim[key] = value
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.validate(c)


def test_resume_names_changed_keys_and_refuses_another_batch_size(digits_shards, tmp_path):
    c = _config(digits_shards, steps=3, checkpoint_every=3, eval_every=3)
    run(c, tmp_path)
    c.train.update(steps=4, batch_size=32)
    with pytest.raises(config_lib.ConfigError, match="train.batch_size=32 but the checkpoint was trained with 16"):
        run(c, tmp_path)
    assert steps_in(tmp_path) == [3]
    c.train.allow_batch_size_change = True
    logged = []
    run(c, tmp_path, logged.append)
    changed = [m for m in logged if m.startswith("resuming with changed config keys")]
    assert changed and "train.batch_size: 16 -> 32" in changed[0] and "train.steps: 3 -> 4" in changed[0]
    assert steps_in(tmp_path) == [3, 4]


def test_unknown_key_on_the_command_line_is_one_line(tmp_path):
    for flag, msg in (("--config.train.bogus=1", "ConfigError: unknown config key 'train.bogus'"),
                      ("--config.optim.lr=-1", "ConfigError: optim.lr=-1.0 must be finite and > 0")):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--config=configs/demo.py:reed",
                            f"--workdir={tmp_path}", flag], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [msg], r.stderr[-2000:]


# ----------------------------------------------------------------------------- shards by content

def test_moved_shards_resume_and_other_shards_are_refused(digits_shards, tmp_path):
    import shutil

    a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "other"
    shutil.copytree(digits_shards, a)
    c = _config(str(a), steps=2, checkpoint_every=2, eval_every=100)
    run(c, tmp_path / "straight")
    c.train.steps = 4
    run(c, tmp_path / "straight")
    want, _ = restored(c, tmp_path / "straight")

    c.train.steps = 2
    run(c, tmp_path / "w")
    shutil.move(str(a), str(b))  # the same shards, elsewhere: resumes with the very next batch
    c.data.dir, c.train.steps = str(b), 4
    logged = []
    run(c, tmp_path / "w", logged.append)
    assert any("data.dir" in m for m in logged if m.startswith("resuming with changed config keys"))
    got, _ = restored(c, tmp_path / "w")
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(x, y)

    shutil.copytree(b, other)  # other shards: two files' contents swapped (manifest kept consistent)
    manifest = json.load(open(other / "manifest.json"))
    r0, r1 = [r for r in manifest["shards"] if r["split"] == "train"][:2]
    os.replace(other / r0["file"], other / "tmp")
    os.replace(other / r1["file"], other / r0["file"])
    os.replace(other / "tmp", other / r1["file"])
    for k in ("count", "bytes", "sha256"):
        r0[k], r1[k] = r1[k], r0[k]
    json.dump(manifest, open(other / "manifest.json", "w"))
    c.data.dir, c.train.steps = str(other), 6
    with pytest.raises(Exception, match=r"trained on other shards than those in .*other.*differing in sha256: \[0, 1\]"):
        run(c, tmp_path / "w")
    assert steps_in(tmp_path / "w") == [2, 4]


def test_import_holds_the_workdir_lock(tmp_path):
    from test_importer import CKPT, tiny_sit_config

    from reed_jax.image import importer

    with lock.WorkdirLock(str(tmp_path)):
        with pytest.raises(lock.WorkdirBusy, match="is in use by another run"):
            importer.import_checkpoint(tiny_sit_config(), str(tmp_path), CKPT, log=lambda *_: None)
    assert steps_in(tmp_path) == []


def test_reuse_freed_memory_keeps_a_freed_block_resident():
    """hostmem.reuse_freed_memory: a freed 256 MiB block stays in the process for the next allocation
    (RSS does not fall on free) instead of being unmapped and page-faulted in again. In a
    subprocess: the setting is process-wide."""
    import subprocess
    import sys

    code = """
import sys, numpy as np
from reed_jax import hostmem
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "1":
    assert hostmem.reuse_freed_memory()
a = np.ones(2**28, np.uint8); held = rss(); del a
print(held - rss())
"""
    drop = {on: float(subprocess.run([sys.executable, "-c", code, on], capture_output=True, text=True,
                                     check=True).stdout) for on in ("0", "1")}
    assert drop["0"] > 200 and drop["1"] < 16, drop  # MiB given back on free: all of it, or none
