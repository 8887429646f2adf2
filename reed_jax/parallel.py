"""Device mesh and shardings: data parallel and FSDP over a `jax.sharding.Mesh`.

Mesh axes `data` and `fsdp` (`config.mesh`, -1 = all remaining devices). The batch is split over
both axes. Parameters, EMA and optimizer state are replicated when `fsdp == 1` (pure data
parallel) and sharded over `fsdp` otherwise, by one tactic that needs no per-model table (the
big_vision "fsdp" tactic): every array of at least `min_size` elements is split along its
largest dimension divisible by the `fsdp` size; smaller arrays stay replicated. The same rule
serves every track's backbone.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """Mesh of shape (data, fsdp) over all devices; one size may be -1 (the rest)."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    sizes = {"data": mesh_cfg.data, "fsdp": mesh_cfg.fsdp}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError("mesh: at most one of mesh.data and mesh.fsdp may be -1")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if free:
        if fixed <= 0 or n % fixed:
            raise ValueError(f"mesh: {n} devices are not divisible by the fixed mesh size {fixed} ({sizes})")
        sizes[free[0]] = n // fixed
    if sizes["data"] * sizes["fsdp"] != n:
        raise ValueError(f"mesh: mesh.data={sizes['data']} x mesh.fsdp={sizes['fsdp']} != {n} devices")
    return Mesh(np.asarray(devices).reshape(sizes["data"], sizes["fsdp"]), ("data", "fsdp"),
                axis_types=(jax.sharding.AxisType.Auto,) * 2)


def fsdp_spec(shape, fsdp: int, min_size: int = 2**14) -> P:
    """PartitionSpec splitting the largest dimension divisible by `fsdp` (or replicated)."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    for d in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[d] % fsdp == 0:
            spec = [None] * len(shape)
            spec[d] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_state, mesh: Mesh, min_size: int = 2**14):
    """NamedSharding per leaf of a (abstract) train state."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, fsdp, min_size)), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh) -> dict:
    """This process's slice of the batch -> global arrays sharded over (data, fsdp)."""
    s = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(s, np.asarray(v)) for k, v in local.items()}


def with_shardings(abstract, shardings):
    """ShapeDtypeStructs carrying target shardings (what orbax restores into)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
