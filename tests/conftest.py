import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One persistent XLA compilation cache per test run, shared by the xdist workers and the main.py
# processes the tests launch (they inherit the environment): many tests compile the same digits
# train step, sampler and encoders. Per run (not per machine), so every run compiles from scratch
# once, as a clean clone in CI does. Set before anything imports jax.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"reed_jax_xla_{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def load_config(name: str, arg: str | None = None):
    """Load configs/<name>.py the way main.py does (module path, optional arg)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg) if arg is not None else mod.get_config()


def tiny_config(variant: str = "reed"):
    """The demo config shrunk for tests: tiny model, few encoder steps, small batches."""
    c = load_config("demo", variant)
    c.model.update(depth=3, hidden=32, heads=2, projector_width=32)
    c.train.update(batch_size=16, steps=6, log_every=2, eval_every=6, checkpoint_every=3)
    c.sample.update(num_steps=3, batch_size=20, grid_per_class=2)
    c.eval.num_samples = 40
    c.precompute.update(encoder_steps=20, fd_steps=20)
    if "digits_pooled" in c.targets:
        c.targets.digits_pooled.tap = "block3"
    return c


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory):
    """Shards of the embedded digits written once per session (tiny encoders)."""
    from reed_jax.data import precompute

    wd = str(tmp_path_factory.mktemp("digits"))
    return precompute.precompute(tiny_config(), wd, log=lambda *_: None)


@pytest.fixture(scope="session")
def sit_xl_reed():
    """SiT-XL/2 + REED as published (configs/imagenet_sit_xl_2_reed.py), traced once per session:
    (config, model, optimizer, abstract train state from jax.eval_shape: shapes only, no memory)."""
    from reed_jax import train

    c = load_config("imagenet_sit_xl_2_reed")
    model, tx = train.build_model(c), train.make_optimizer(c)
    return c, model, tx, train.abstract_state(c, model, tx)


def trace_reed_step(c, model, tx, state, latent: int, tokens: int, b: int = 2):
    """Trace (jax.eval_shape, no memory) an ImageNet REED train step on latents [b, latent, latent, 4]
    with DINOv2 tokens [b, tokens, 768] and the VLM vector; returns the step's metrics shapes."""
    import jax
    import jax.numpy as jnp

    from reed_jax import train

    batch = {"moments": jax.ShapeDtypeStruct((b, latent, latent, 8), jnp.float32),
             "label": jax.ShapeDtypeStruct((b,), jnp.int32),
             "target/dinov2": jax.ShapeDtypeStruct((b, tokens, 768), jnp.bfloat16),
             "target/vlm": jax.ShapeDtypeStruct((b, 3584), jnp.float32)}
    new, metrics = jax.eval_shape(train.make_train_step(c, model, tx), state, batch)
    assert new.step.dtype == jnp.int32
    return metrics


def qm9_standin_wheel(path) -> str:
    """A stand-in for the qm9pack wheel at `path`: the same member paths (molecule.data.QM9_PARTS),
    tests/fixtures/qm9_rows.csv's real rows split in three. Returns the path."""
    import csv
    import io
    import zipfile

    from reed_jax.molecule import data

    with open(os.path.join(ROOT, "tests", "fixtures", "qm9_rows.csv")) as fh:
        rows = list(csv.DictReader(fh))
    with zipfile.ZipFile(path, "w") as zf:
        for i, part in enumerate(data.QM9_PARTS):
            buf = io.StringIO()
            w = csv.DictWriter(buf, list(rows[0]))
            w.writeheader()
            w.writerows(rows[i::3])
            zf.writestr(part, buf.getvalue())
    return str(path)
