"""The molecule backbone with its REED projector, its losses and its sampler.

`MoleculeREED` = equivariant backbone (EGNN or Semla, `molecule.backbone`) + heads (atom type,
charge, bond logits, clean coordinates) + one projector per target on a pooled tap: the tap's atom
features summed over the *real* atoms only (the reference also sums padding rows; we don't), then
the MLP to the target width.

`losses(config, model, params, batch, rng)` (what the shared train step calls) returns per-molecule
generative loss [B] = coordinate MSE (mean over real atoms, in scaled units) + 0.2 type CE + 1.0
bond CE (over real atom pairs) + 1.0 charge CE (config.molecule.loss_*), the alignment losses
{name: [B]} and 1 - t [B] (the objective's noise level, 1 = noise). The batch carries the
OT-paired prior draw `prior` [B, N, 3] made on the host (`with_prior`).
"""
from __future__ import annotations

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import objective
from reed_jax.data import records
from reed_jax.models.projector import Projector
from reed_jax.molecule import chem, egnn, flow, semla

FIELDS = ("types", "charges", "bonds", "coords", "mask")  # what the backbone reads of a molecule


def elements(m) -> tuple[str, ...]:
    return chem.QM9_ELEMENTS if m.elements == "qm9" else chem.DRUG_ELEMENTS


@dataclasses.dataclass(frozen=True)
class MoleculeTarget:
    name: str
    tap: str
    width: int
    z_dim: int


class MoleculeREED(nn.Module):
    net: nn.Module  # egnn.EGNN or semla.Semla
    num_types: int
    targets: tuple[MoleculeTarget, ...] = ()
    self_condition: bool = False

    @nn.compact
    def __call__(self, coords, types, charges, bonds, t, mask, with_projectors: bool = True, cond=None):
        """coords [B, N, 3] (scaled), types/charges [B, N] int, bonds [B, N, N] int, t [B], mask [B, N]
        -> ({coords [B, N, 3], types [B, N, T], charges [B, N, C], bonds [B, N, N, E]}, {name: [B, z]}).

        With `self_condition`, `cond` is a previous prediction (`as_condition` of the dict this returns;
        None = no prediction: zero probabilities, x1hat = x) fed back as invariant inputs: type/charge/bond
        probabilities, |x_i - x1hat_i|^2 per atom and |x1hat_i - x1hat_j|^2 per pair (equivariance kept)."""
        mask = mask.astype(jnp.float32)
        nodes = [jax.nn.one_hot(types, self.num_types), jax.nn.one_hot(charges, len(chem.CHARGES)),
                 jnp.broadcast_to(t[:, None, None], types.shape + (1,))]
        edges = [jax.nn.one_hot(bonds, len(chem.BOND_ORDERS))]
        if self.self_condition:
            cond = no_condition(coords, self.num_types) if cond is None else cond
            xh = cond["coords"]
            nodes += [cond["types"], cond["charges"], ((coords - xh) ** 2).sum(-1, keepdims=True)]
            edges += [cond["bonds"], ((xh[:, :, None] - xh[:, None]) ** 2).sum(-1, keepdims=True)]
        x, h, e, taps = self.net(coords, jnp.concatenate(nodes, -1), jnp.concatenate(edges, -1), mask)
        out = {"coords": x, "types": nn.Dense(self.num_types, name="type_head")(h),
               "charges": nn.Dense(len(chem.CHARGES), name="charge_head")(h),
               "bonds": nn.Dense(len(chem.BOND_ORDERS), name="bond_head")(nn.silu(
                   nn.Dense(self.net.edge_dim, name="bond_hidden")(e)))}
        feats = {}
        if with_projectors:
            for tg in self.targets:
                pooled = (taps[tg.tap] * mask[..., None]).sum(1)  # real atoms only
                feats[tg.name] = Projector(tg.width, tg.z_dim, hidden_layers=2, name=f"projectors_{tg.name}")(pooled)
        return out, feats


def as_condition(out: dict) -> dict:
    """A prediction -> the self-conditioning input: coordinates and class probabilities (no gradient)."""
    out = jax.lax.stop_gradient(out)
    return {"coords": out["coords"], **{k: jax.nn.softmax(out[k]) for k in ("types", "charges", "bonds")}}


def no_condition(coords: jax.Array, num_types: int) -> dict:
    """The self-conditioning input when there is no prediction: x1hat = x, zero probabilities."""
    b, n = coords.shape[:2]
    return {"coords": coords, "types": jnp.zeros((b, n, num_types)), "charges": jnp.zeros((b, n, len(chem.CHARGES))),
            "bonds": jnp.zeros((b, n, n, len(chem.BOND_ORDERS)))}


def tap_names(m) -> tuple[str, ...]:
    return tuple(f"layer{i}" for i in range(1, m.layers + 1))


def build_backbone(config):
    """molecule.backbone -> the equivariant network (egnn.EGNN or semla.Semla; one interface)."""
    m = config.molecule
    if m.backbone == "semla":
        return semla.Semla(hidden=config.model.hidden, edge_dim=m.edge_dim, layers=m.layers, sets=m.coord_sets,
                           heads=m.heads, message_dim=m.message_dim, message_hidden=m.message_hidden,
                           size_emb=m.size_emb, max_atoms=m.max_atoms)
    return egnn.EGNN(hidden=config.model.hidden, edge_dim=m.edge_dim, layers=m.layers)


def build_model(config) -> MoleculeREED:
    m = config.molecule
    net = build_backbone(config)
    targets = tuple(MoleculeTarget(n, t.tap, t.proj_width or config.model.projector_width, t.dim)
                    for n, t in config.targets.items())
    return MoleculeREED(net, len(elements(m)), targets, bool(m.self_condition))


def init_params(config, model: MoleculeREED, rng: jax.Array) -> dict:
    n = config.molecule.max_atoms
    z = lambda *s: jnp.zeros((1,) + s, jnp.int32)
    init = jax.jit(lambda r: model.init(r, jax.random.normal(r, (1, n, 3)), z(n), z(n), z(n, n), jnp.ones((1,)),
                                        jnp.ones((1, n)))["params"])  # jitted: eager init dispatches op by op
    return init(rng)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), labels[..., None], -1)[..., 0]


def masked_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    """Per-molecule mean of x [B, ...] over the weights w [B, ...] -> [B]."""
    axes = tuple(range(1, x.ndim))
    return (x * w).sum(axes) / jnp.maximum(w.sum(axes), 1.0)


def losses(config, model: MoleculeREED, params, batch, rng):
    m = config.molecule
    k_t, k_a, k_c, k_b, k_x = jax.random.split(rng, 5)
    mask = batch["mask"].astype(jnp.float32)
    b = mask.shape[0]
    pair = mask[:, :, None] * mask[:, None, :] * (1.0 - jnp.eye(mask.shape[1]))[None]
    t = flow.sample_time(k_t, b, *m.time_beta)
    x1 = batch["coords"] / m.coord_scale
    xt = t[:, None, None] * x1 + (1.0 - t[:, None, None]) * batch["prior"]
    xt = xt + egnn.centre(m.coord_noise * jax.random.normal(k_x, xt.shape), mask)
    nt = len(elements(m))
    types = flow.corrupt_categorical(k_a, batch["types"], t, nt)
    charges = flow.corrupt_categorical(k_c, batch["charges"], t, len(chem.CHARGES))
    bonds = flow.corrupt_bonds(k_b, batch["bonds"], t, len(chem.BOND_ORDERS))
    xt = xt * mask[..., None]
    cond = None
    if model.self_condition:  # half of the molecules see a first (gradient-free) prediction, the rest zeros
        first, _ = model.apply({"params": params}, xt, types, charges, bonds, t, mask, with_projectors=False)
        use = jax.random.bernoulli(jax.random.fold_in(k_x, 1), 0.5, (b,))
        cond = jax.tree.map(lambda v, z: jnp.where(use.reshape((b,) + (1,) * (v.ndim - 1)), v, z),
                            as_condition(first), no_condition(xt, model.num_types))
    out, feats = model.apply({"params": params}, xt, types, charges, bonds, t, mask, cond=cond)
    parts = {"coords": masked_mean(((out["coords"] - x1) ** 2).sum(-1), mask),
             "types": masked_mean(cross_entropy(out["types"], batch["types"]), mask),
             "charges": masked_mean(cross_entropy(out["charges"], batch["charges"]), mask),
             "bonds": masked_mean(cross_entropy(out["bonds"], batch["bonds"]), pair)}
    gen = (m.loss_coords * parts["coords"] + m.loss_types * parts["types"] + m.loss_charges * parts["charges"]
           + m.loss_bonds * parts["bonds"])
    align = {n: objective.alignment_loss(f, batch[records.TARGET_PREFIX + n]) for n, f in feats.items()}
    return gen, align, 1.0 - t


def make_sampler(config, model: MoleculeREED):
    """(params, rng, mask [B, N]) -> {coords [B, N, 3] Angstrom, types, charges, bonds} (ints: the
    argmax of the last prediction), integrating the flow over `molecule.sample_steps` steps. One
    jitted function with the model and the config's numbers static: jax's compile cache shares the
    compile between every sampler made for an equal model and config (e.g. sampling after training)."""
    m = config.molecule
    return functools.partial(_sample, model=model, steps=int(m.sample_steps), coord_scale=float(m.coord_scale))


@functools.partial(jax.jit, static_argnames=("model", "steps", "coord_scale"))
def _sample(params, rng, mask, *, model: MoleculeREED, steps: int, coord_scale: float):
    grid = jnp.asarray(flow.time_grid(steps), jnp.float32)
    nt, nc, nb = model.num_types, len(chem.CHARGES), len(chem.BOND_ORDERS)
    mask = mask.astype(jnp.float32)
    b, n = mask.shape
    k = jax.random.split(rng, 5)
    x = egnn.centre(jax.random.normal(k[0], (b, n, 3)), mask)
    a = jax.random.randint(k[1], (b, n), 0, nt)
    c = jax.random.randint(k[2], (b, n), 0, nc)
    e = flow.symmetric(lambda kk, s: jax.random.randint(kk, s, 0, nb), k[3], (b, n, n))
    apply = lambda x, a, c, e, t, cond: model.apply({"params": params}, x, a, c, e, jnp.full((b,), t), mask,
                                                    with_projectors=False, cond=cond)[0]

    def step(carry, i):
        x, a, c, e, key, prev = carry
        t, t_next = grid[i], grid[i + 1]
        out = apply(x, a, c, e, t, prev if model.self_condition else None)
        prev = as_condition(out)
        dt = t_next - t
        key, ka, kc, ke = jax.random.split(key, 4)
        x = egnn.centre(x + dt * (out["coords"] - x) / (1.0 - t), mask)
        p = jnp.full((b,), jnp.minimum(dt / (1.0 - t), 1.0))
        a = flow.jump(ka, a, out["types"], p)
        c = flow.jump(kc, c, out["charges"], p)
        e_new = flow.jump(ke, e, out["bonds"], p)
        up = jnp.triu(e_new, 1)
        e = up + jnp.swapaxes(up, 1, 2)
        return (x, a, c, e, key, prev), None

    init = (x, a, c, e, k[4], no_condition(x, nt))  # the first step sees no prediction, as in training
    (x, a, c, e, _, prev), _ = jax.lax.scan(step, init, jnp.arange(steps))
    out = apply(x, a, c, e, grid[-1], prev if model.self_condition else None)
    bonds = jnp.argmax(out["bonds"] + jnp.swapaxes(out["bonds"], 1, 2), -1)
    bonds = bonds * (1 - jnp.eye(n, dtype=bonds.dtype))[None] * (mask[:, :, None] * mask[:, None, :]).astype(
        bonds.dtype)
    return {"coords": out["coords"] * coord_scale * mask[..., None], "types": jnp.argmax(out["types"], -1),
            "charges": jnp.argmax(out["charges"], -1), "bonds": bonds}


def check_data(config, schema: records.Schema, data_dir: str) -> None:
    """Molecule shards: padded to molecule.max_atoms, one global target vector per configured target."""
    n = config.molecule.max_atoms
    for name, shape in (("types", (n,)), ("charges", (n,)), ("bonds", (n, n)), ("coords", (n, 3)), ("mask", (n,))):
        have = tuple(schema.field(name).shape)
        if have != shape:
            raise records.DataError(f"molecule.max_atoms={n} expects field {name!r} of shape {shape}; shards in "
                                    f"{data_dir!r} hold {have} (precompute again with this max_atoms)")
    records.check_targets(schema, {k: (t.dim,) for k, t in config.targets.items()}, data_dir)


class WithPrior:
    """Wraps a batch iterator: adds `prior` [B, N, 3], the OT-paired noise (flow.noise_for_batch),
    drawn from default_rng([seed, process, k]) for the k-th batch, so a resumed run draws the same.
    get_state/set_state carry the inner iterator's state and k."""

    def __init__(self, inner, config, process_index: int = 0):
        self.inner, self.m, self.seed, self.proc, self.k = inner, config.molecule, config.seed, process_index, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = dict(next(self.inner))
        rng = np.random.default_rng([self.seed, self.proc, self.k])
        self.k += 1
        batch["prior"] = flow.noise_for_batch(rng, batch["coords"], batch["mask"], self.m.coord_scale, self.m.ot)
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"inner": self.inner.get_state().decode(), "k": self.k}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        self.inner.set_state(s["inner"].encode())
        self.k = int(s["k"])
