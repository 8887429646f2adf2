"""Device mesh and shardings: data parallel and FSDP over a `jax.sharding.Mesh`.

Mesh axes `data` and `fsdp` (`config.mesh`, -1 = all remaining devices). The batch is split over
both axes. Parameters, EMA and optimizer state are replicated when `fsdp == 1` (pure data
parallel) and sharded over `fsdp` otherwise.

Which dimension is sharded comes from the parameters' logical axis names (flax logical
partitioning, e.g. SiT's `("embed", "mlp")` kernels) through the one table `RULES`: `embed` (the
residual width) and the projector width go to `fsdp`, everything else stays whole. A dimension
the mesh axis does not divide stays whole, and arrays under `min_size` elements are replicated
(their all-gathers cost more than they save). A parameter without logical names (a new track's
module that has not annotated them yet) falls back to the big_vision "fsdp" tactic: split the
largest dimension divisible by the `fsdp` size. Optimizer-state leaves follow the parameter they
mirror (matched by path and shape).
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")

# logical axis name -> mesh axis (None: never sharded). Rules apply in table order and each mesh
# axis is used once per array, so a [proj_in, proj] kernel shards `proj` only.
RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("proj", "fsdp"),
    ("proj_in", "fsdp"),
    ("mlp", None), ("qkv", None), ("heads", None), ("adaln", None), ("temb", None), ("freq", None),
    ("vocab", None), ("patch", None), ("patch_in", None), ("target", None), ("layers", None),
)


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


def logical_to_mesh(logical: P, shape, mesh: Mesh, rules=RULES, min_size: int = 2**14) -> P:
    """Mesh PartitionSpec of an array with logical axis names: `rules` applied, then every mesh axis
    that does not divide its dimension (or has size 1) dropped; arrays under `min_size` replicated."""
    if math.prod(shape) < min_size:
        return P()
    from flax import linen as nn

    axes = nn.logical_to_mesh_axes(tuple(logical), rules)
    out = []
    for dim, ax in zip(shape, axes):
        names = (ax,) if isinstance(ax, str) else tuple(ax or ())
        size = math.prod(mesh.shape[a] for a in names)
        out.append(None if not names or size == 1 or dim % size else ax)
    while out and out[-1] is None:
        out.pop()
    return P(*out)


def _path_key(path) -> tuple:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_shardings(abstract_state, mesh: Mesh, logical_params=None, rules=RULES, min_size: int = 2**14):
    """NamedSharding per leaf of an (abstract) train state.

    logical_params: the logical PartitionSpec of every param (e.g. `sit.logical_specs(model)`).
    A state leaf whose path ends with a param's path and has its shape (params, EMA, Adam moments)
    gets that param's spec through `rules`; other leaves, and params without names, get the
    size-based `fsdp_spec` tactic.
    """
    fsdp = mesh.shape["fsdp"]
    named = {}
    if logical_params is not None:
        for path, spec in jax.tree_util.tree_flatten_with_path(logical_params, is_leaf=lambda x: isinstance(x, P))[0]:
            if isinstance(spec, P) and len(spec):
                named[_path_key(path)] = spec
    longest = max((len(k) for k in named), default=0)

    def one(path, a):
        key = _path_key(path)
        for n in range(min(longest, len(key)), 0, -1):
            spec = named.get(key[-n:])
            if spec is not None and len(spec) == len(a.shape):
                return NamedSharding(mesh, logical_to_mesh(spec, a.shape, mesh, rules, min_size))
        return NamedSharding(mesh, fsdp_spec(a.shape, fsdp, min_size))

    return jax.tree_util.tree_map_with_path(one, abstract_state)


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
