"""Classifier-free guidance through the real sampling path (`image_eval.make_sample_fn` + `generate`),
pinned against the unguided model's two forward passes (class y, null class) combined by hand as
REPA/REED `samplers.py` does: guidance decided once per step from t_cur, kept for Heun's corrector;
for the SDE the two drifts are combined. On one device and on meshes of 8 fake CPU devices (this
file run as a script, XLA_FLAGS set before jax is imported)."""
import functools
import os
import subprocess
import sys

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_config  # noqa: E402

from reed_jax import train  # noqa: E402
from reed_jax.image import evaluate as image_eval  # noqa: E402

SCALE, LO, HI, BATCH, SEED = 3.0, 0.0, 0.6, 8, 5
LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 9], np.int32)


def guided_config(method: str, num_steps: int):
    c = tiny_config("reed")
    c.sample.update(method=method, num_steps=num_steps, cfg_scale=SCALE, guidance_lo=LO, guidance_hi=HI,
                    batch_size=BATCH)
    return c


@functools.lru_cache(maxsize=1)
def random_params():
    """Params of the tiny model (the sample settings do not change them: one set serves every
    check of a process). The init's adaLN-zero output is 0 for every class: every weight is
    perturbed so the classes differ."""
    c = tiny_config("reed")
    model = train.build_model(c)

    def init():
        leaves, tree = jax.tree.flatten(train.init_state(c, model, train.make_optimizer(c)).params)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        return jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

    return jax.jit(init)()


def by_hand(c, model, params, scale=SCALE, decide_at_next=False):
    """float64 transcription of the reference samplers with one model pass per branch."""
    s, n, null = c.sample, len(LABELS), c.data.num_classes
    k_x, k_s = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(SEED), 0))  # generate's batch-0 key
    x = np.asarray(jax.random.normal(k_x, (n,) + tuple(c.data.image_shape)), np.float64)

    fwd = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y, with_projectors=False)[0])

    def f(x, t, y):  # one plain forward pass of the model on the batch
        return np.asarray(fwd(params, jnp.asarray(x, jnp.float32), jnp.full((n,), t, jnp.float32), jnp.asarray(y)),
                          np.float64)

    def drift(x, t, y):  # velocity (ODE) or SDE drift v - 0.5 * 2t * score, score = -((1 - t) v + x) / t
        v = f(x, t, y)
        return v if s.method != "sde" else v - 0.5 * (2 * t) * (-((1 - t) * v + x) / t)

    def guided(x, t, on):
        d_c = drift(x, t, LABELS)
        if not (on and scale > 1):
            return d_c
        d_u = drift(x, t, np.full(n, null, np.int32))
        return d_u + scale * (d_c - d_u)

    inside = lambda t: LO <= t <= HI
    if s.method == "sde":
        ts = np.concatenate([np.linspace(1.0, 0.04, s.num_steps), [0.0]])
        key = k_s
        for i in range(s.num_steps - 1):
            key, sub = jax.random.split(key)
            noise = np.asarray(jax.random.normal(sub, x.shape), np.float64)
            dt = ts[i + 1] - ts[i]
            x = x + guided(x, ts[i], inside(ts[i])) * dt + np.sqrt(2 * ts[i]) * np.sqrt(abs(dt)) * noise
        return x + (ts[-1] - ts[-2]) * guided(x, ts[-2], inside(ts[-2]))
    ts = np.linspace(1.0, 0.0, s.num_steps + 1)
    for i in range(s.num_steps):
        dt = ts[i + 1] - ts[i]
        d = guided(x, ts[i], inside(ts[i]))
        x_next = x + dt * d
        if s.method == "heun" and i < s.num_steps - 1:
            x_next = x + dt * 0.5 * (d + guided(x_next, ts[i + 1], inside(ts[i + 1] if decide_at_next else ts[i])))
        x = x_next
    return x


def check(method: str, num_steps: int, mesh=None, shard_params=None, teeth: bool = True) -> None:
    c = guided_config(method, num_steps)
    model = train.build_model(c)
    params = random_params()
    want = by_hand(c, model, params)
    if shard_params is not None:
        params = shard_params(c, model, params)
    got = image_eval.generate(image_eval.make_sample_fn(c, model), params, LABELS, BATCH, seed=SEED, mesh=mesh)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # the check has teeth: unguided sampling, or Heun's corrector guided from t_next, is far off
    if not teeth:
        return
    far = lambda other: np.abs(other - want).max() > 100 * (2e-5 + 2e-4 * np.abs(want).max())
    assert far(by_hand(c, model, params, scale=1.0))
    if method == "heun":
        assert far(by_hand(c, model, params, decide_at_next=True))


def test_guided_heun_and_sde_through_make_sample_fn():
    # Heun on 1, .75, .5, .25, 0 with [0, 0.6]: the step from .75 is unguided in both evaluations;
    # SDE on 1, .52, .04, 0: unguided, then guided (the deterministic last step included)
    check("heun", 4)
    check("sde", 3)


def test_guided_sampling_on_8_fake_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "CFG MESH OK" in out.stdout


def _mesh_worker() -> None:
    import ml_collections

    from reed_jax import parallel

    assert jax.device_count() == 8, jax.devices()
    for data, fsdp in ((8, 1), (2, 4)):
        mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp)))

        def shard(c, model, params, mesh=mesh):  # the EMA params as training leaves them: state shardings
            tx = train.make_optimizer(c)
            specs = parallel.state_shardings(train.abstract_state(c, model, tx), mesh, train.logical_specs(c, model))
            return jax.device_put(params, specs.params)

        for method, steps in (("heun", 4), ("sde", 3)):
            check(method, steps, mesh, shard, teeth=False)
            print(f"mesh data={data} fsdp={fsdp} {method}: guided samples match the hand combination")
    print("CFG MESH OK")


if __name__ == "__main__":
    _mesh_worker()
