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
    assert not (tmp_path / "partial" / "toy_seed0.npz").exists()  # removed once finished


def test_checkpoint_of_another_state_is_refused(tmp_path):
    path = str(tmp_path / "p.npz")
    benchmark._save_partial(path, {"n": jnp.zeros((), jnp.int32), "w": jnp.zeros(3, jnp.float32)}, 3, [], 0.0, 0.0)
    with pytest.raises(ValueError, match=r"leaf_1 is float32\[3\], the state's is float32\[2\]"):
        _run(path, _score)
