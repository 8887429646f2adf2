import os
import subprocess
import sys

import ml_collections
import pytest

from reed_jax import parallel
from reed_jax.image import config as image_config

HERE = os.path.dirname(os.path.abspath(__file__))


def test_sharded_step_matches_single_device_on_8_cpu_devices():
    """Data parallel, FSDP and a 2x4 mesh give the single-device loss, update and samples; FSDP
    really splits params, EMA and Adam moments; an 8-device FSDP checkpoint restores onto 4 and 1
    devices with other meshes (see parallel_worker.py)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.join(HERE, "parallel_worker.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "PARALLEL OK" in out.stdout


def test_fsdp_spec_and_mesh_errors():
    assert parallel.fsdp_spec((64, 256), 8, min_size=1) == parallel.P(None, "fsdp")
    assert parallel.fsdp_spec((1001, 1152), 8, min_size=1) == parallel.P(None, "fsdp")  # 1001 not divisible
    assert parallel.fsdp_spec((7, 9), 8, min_size=1) == parallel.P()
    assert parallel.fsdp_spec((32, 256), 8) == parallel.P()  # arrays under 2**14 elements stay replicated
    assert parallel.fsdp_spec((4096, 4096), 1) == parallel.P()
    with pytest.raises(ValueError, match="mesh.data=3 x mesh.fsdp=1 != 1 devices"):
        parallel.make_mesh(ml_collections.ConfigDict(dict(data=3, fsdp=1)))
    with pytest.raises(ValueError, match="at most one"):
        parallel.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=-1)))


def test_logical_rules_shard_every_large_sit_xl_param_on_its_embed_axis():
    """SiT-XL/2 + REED (scanned): logical names -> RULES -> mesh specs, checked without devices."""
    import types

    import jax

    from reed_jax import train

    c = image_config.imagenet_config("XL", "reed")
    c.model.scan = True
    specs = train.logical_specs(c, train.build_model(c))
    shapes = jax.eval_shape(lambda: train.init_state(c, train.build_model(c), train.make_optimizer(c))).params
    mesh = types.SimpleNamespace(shape={"data": 2, "fsdp": 8})
    flat = dict(jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, parallel.P))[0])
    n_sharded = 0
    for path, a in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        logical = flat[path]
        assert len(logical) == len(a.shape), (path, logical)  # every param is named
        spec = parallel.logical_to_mesh(logical, a.shape, mesh)
        if a.size >= 2**14 and {"embed", "proj", "proj_in"} & set(logical):
            assert "fsdp" in spec, (jax.tree_util.keystr(path), logical, spec)
            dim = list(spec).index("fsdp")
            assert logical[dim] in ("embed", "proj", "proj_in")
            n_sharded += 1
        else:  # small arrays and biases of non-embed axes stay whole
            assert spec == parallel.P(), (jax.tree_util.keystr(path), logical, spec)
    assert n_sharded > 20
    qkv = shapes["blocks_0_to_7"]["attn"]["qkv"]["kernel"]  # [8 blocks, 1152, 3456]
    assert qkv.shape == (8, 1152, 3456)
    spec = flat_spec(specs, "blocks_0_to_7", "attn", "qkv")
    assert parallel.logical_to_mesh(spec, qkv.shape, mesh) == parallel.P(None, "fsdp")
    # a mesh axis that does not divide the dimension leaves it whole; size-1 axes are dropped
    wide = types.SimpleNamespace(shape={"data": 1, "fsdp": 256})
    assert parallel.logical_to_mesh(parallel.P("embed", "mlp"), (1152, 4608), wide) == parallel.P()
    assert parallel.logical_to_mesh(parallel.P("embed", "mlp"), (1152, 4608),
                                    types.SimpleNamespace(shape={"data": 8, "fsdp": 1})) == parallel.P()
    # rules apply in table order and a mesh axis is used once: [proj_in, proj] shards `proj` only
    assert parallel.logical_to_mesh(parallel.P("proj_in", "proj"), (2048, 2048), mesh) == parallel.P(None, "fsdp")


def flat_spec(specs, *keys):
    for k in keys:
        specs = specs[k]
    return specs["kernel"]
