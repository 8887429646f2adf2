"""Run by test_parallel.py in a subprocess with 8 fake CPU devices (XLA_FLAGS set before jax)."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_config  # noqa: E402

from reed_jax import parallel, train  # noqa: E402
from reed_jax.image import evaluate as image_eval  # noqa: E402

assert jax.device_count() == 8, jax.devices()
c = tiny_config("reed")
c.model.update(hidden=64, heads=4, projector_width=64)
c.train.batch_size = 16
c.sample.batch_size = 16
c.curriculum.gen.warmup = 0
model, tx = train.build_model(c), train.make_optimizer(c)
rng = np.random.default_rng(0)
batch = {"image": rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32),
         "label": rng.integers(0, 10, 16).astype(np.int32),
         "target/digits_tokens": rng.normal(size=(16, 16, 64)).astype(np.float32),
         "target/digits_pooled": rng.normal(size=(16, 128)).astype(np.float32)}


def run(data, fsdp, devices):
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp)), devices)
    abstract = train.abstract_state(c, model, tx)
    shardings = parallel.state_shardings(abstract, mesh, train.logical_specs(c, model))
    state = train.create_state(c, model, tx, shardings)
    step = train.make_train_step(c, model, tx, mesh=mesh, shardings=shardings)
    losses = []
    for _ in range(3):
        state, m = step(state, parallel.global_batch(batch, mesh))
        losses.append(float(m["loss/total"]))
    samples = image_eval.generate(image_eval.make_sample_fn(c, model), state.ema_params, np.arange(16, dtype=np.int32) % 10,
                             16, seed=0, mesh=mesh)
    return state, losses, samples


ref_state, ref_losses, ref_samples = run(1, 1, jax.devices()[:1])
for data, fsdp in ((8, 1), (1, 8), (2, 4)):
    state, losses, samples = run(data, fsdp, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(samples, ref_samples, rtol=1e-4, atol=1e-4)
    fc1 = state.params["blocks_0"]["mlp"]["fc1"]["kernel"]  # [64, 256]
    mu = state.opt_state[1][0].mu["blocks_0"]["mlp"]["fc1"]["kernel"]
    if fsdp > 1:
        # logical ("embed", "mlp") -> RULES: embed on fsdp
        assert fc1.sharding.spec == parallel.P("fsdp"), fc1.sharding
        assert fc1.addressable_shards[0].data.shape == (64 // fsdp, 256), fc1.addressable_shards[0].data.shape
        assert mu.addressable_shards[0].data.shape == (64 // fsdp, 256)
        ema = state.ema_params["blocks_0"]["mlp"]["fc1"]["kernel"]
        assert ema.addressable_shards[0].data.shape == (64 // fsdp, 256)
        fc2 = state.params["blocks_0"]["mlp"]["fc2"]["kernel"]  # ("mlp", "embed") [256, 64]
        assert fc2.sharding.spec == parallel.P(None, "fsdp"), fc2.sharding
    else:
        assert fc1.addressable_shards[0].data.shape == (64, 256)
    print(f"mesh data={data} fsdp={fsdp}: losses {losses} match single device")
    if (data, fsdp) == (1, 8):
        state8 = state
# save on 8 devices (FSDP), restore onto 4 devices (data parallel) and onto 1 device
import tempfile  # noqa: E402

from reed_jax import checkpoint  # noqa: E402

mngr = checkpoint.manager(tempfile.mkdtemp(), keep=1)
checkpoint.save(mngr, 3, state8, {"signature": {}})
mngr.wait_until_finished()
abstract = train.abstract_state(c, model, tx)
for data, fsdp, devices in ((4, 1, jax.devices()[:4]), (2, 2, jax.devices()[4:]), (1, 1, jax.devices()[:1])):
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp)), devices)
    shardings = parallel.state_shardings(abstract, mesh, train.logical_specs(c, model))
    restored, _ = checkpoint.restore(mngr, parallel.with_shardings(abstract, shardings))
    for a, b, s in zip(jax.tree.leaves(restored), jax.tree.leaves(state8), jax.tree.leaves(shardings)):
        assert a.sharding == s, (a.sharding, s)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print(f"restored the 8-device FSDP checkpoint onto mesh data={data} fsdp={fsdp} ({len(devices)} devices)")
print("PARALLEL OK")
