import os
import subprocess
import sys

import ml_collections
import pytest

from reed_jax import parallel

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
