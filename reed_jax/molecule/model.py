"""The molecule backbone with its REED projector, its losses and its sampler.

`MoleculeREED` = equivariant backbone (EGNN or Semla, `molecule.backbone`) + heads (atom type,
charge, bond logits, clean coordinates) + one projector per target on a pooled tap: the tap's atom
features summed over the *real* atoms only (the reference also sums padding rows; we don't), then
the MLP to the target width. Its inputs are, as SemlaFlow's: t, the noisy coordinates, atom types
and bonds; charges are predicted only (the interpolated molecule has none).

`losses(config, model, params, batch, rng)` (what the shared train step calls) returns per-molecule
generative loss [B] = coordinate MSE (mean over real atoms x 3, in scaled units) + 0.2 type CE + 1.0
bond CE (over real atom pairs, the diagonal included: SemlaFlow's `self_connect`) + 1.0 charge CE
(config.molecule.loss_*), the alignment losses {name: [B]} and 1 - t [B] (the objective's noise
level, 1 = noise). The batch carries the OT-paired prior draw `prior` [B, N, 3] made on the host
(`with_prior`).
"""
from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import objective, targets as targets_lib
from reed_jax.data import records
from reed_jax.models.projector import Projector
from reed_jax.molecule import chem, egnn, flow, semla

FIELDS = ("types", "charges", "bonds", "coords", "mask")  # what the track reads of a molecule
COORD_SCALE = {"qm9": 1.723299503326416, "drugs": 2.407038688659668}  # SemlaFlow scriptutil.py: coordinate std


def elements(m) -> tuple[str, ...]:
    return chem.QM9_ELEMENTS if m.elements == "qm9" else chem.DRUG_ELEMENTS


def coord_scale(m) -> float:
    """molecule.coord_scale, or (0) the dataset's coordinate std: QM9 1.7233, GEOM-Drugs 2.4070 Angstrom."""
    return float(m.coord_scale) or COORD_SCALE[m.elements]


class MoleculeREED(nn.Module):
    net: nn.Module  # egnn.EGNN or semla.Semla
    num_types: int
    targets: tuple[targets_lib.Target, ...] = ()
    self_condition: bool = False

    @nn.compact
    def __call__(self, coords, types, bonds, t, mask, with_projectors: bool = True, cond=None):
        """coords [B, N, 3] (scaled), types [B, N] int, bonds [B, N, N] int, t [B], mask [B, N]
        -> ({coords [B, N, 3], types [B, N, T], charges [B, N, C], bonds [B, N, N, E]}, {name: [B, z]}).

        With `self_condition`, `cond` is a previous prediction (`as_condition` of the dict this returns;
        None = no prediction: zero coordinates and zero probabilities, as SemlaFlow) fed back as inputs:
        type and bond probabilities (no charges: the reference feeds none), and the predicted coordinates,
        for Semla as a second input coordinate set (the reference's), for the EGNN as invariants
        |x_i - x1hat_i|^2 per atom and |x1hat_i - x1hat_j|^2 per pair, both centred (equivariance kept)."""
        mask = mask.astype(jnp.float32)
        nodes = [jax.nn.one_hot(types, self.num_types), jnp.broadcast_to(t[:, None, None], types.shape + (1,))]
        edges = [jax.nn.one_hot(bonds, len(chem.BOND_ORDERS))]
        extra = {}
        if self.self_condition:
            cond = no_condition(coords, self.num_types) if cond is None else cond
            nodes.append(cond["types"])
            edges.append(cond["bonds"])
            if isinstance(self.net, semla.Semla):
                extra["cond_coords"] = cond["coords"]
            else:
                xc, xh = egnn.centre(coords, mask), egnn.centre(cond["coords"], mask)
                nodes.append(((xc - xh) ** 2).sum(-1, keepdims=True))
                edges.append(((xh[:, :, None] - xh[:, None]) ** 2).sum(-1, keepdims=True))
        x, h, e, taps = self.net(coords, jnp.concatenate(nodes, -1), jnp.concatenate(edges, -1), mask, **extra)
        out = {"coords": x, "types": nn.Dense(self.num_types, name="type_head")(h),
               "charges": nn.Dense(len(chem.CHARGES), name="charge_head")(h),
               "bonds": nn.Dense(len(chem.BOND_ORDERS), name="bond_head")(nn.silu(
                   nn.Dense(self.net.edge_dim, name="bond_hidden")(e)))}
        feats = {}
        if with_projectors:
            for tg in self.targets:
                pooled = (taps[tg.tap] * mask[..., None]).sum(1)  # real atoms only
                feats[tg.name] = Projector(tg.proj_width, tg.dim, hidden_layers=2, name=f"projectors_{tg.name}")(pooled)
        return out, feats


def as_condition(out: dict) -> dict:
    """A prediction -> the self-conditioning input: coordinates, type and bond probabilities (no gradient)."""
    out = jax.lax.stop_gradient(out)
    return {"coords": out["coords"], **{k: jax.nn.softmax(out[k]) for k in ("types", "bonds")}}


def no_condition(coords: jax.Array, num_types: int) -> dict:
    """The self-conditioning input when there is no prediction: zero coordinates and probabilities (SemlaFlow)."""
    b, n = coords.shape[:2]
    return {"coords": jnp.zeros_like(coords), "types": jnp.zeros((b, n, num_types)),
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
    targets = targets_lib.from_config(config)
    return MoleculeREED(net, len(elements(m)), targets, bool(m.self_condition))


def init_params(config, model: MoleculeREED, rng: jax.Array) -> dict:
    n = config.molecule.max_atoms
    z = lambda *s: jnp.zeros((1,) + s, jnp.int32)
    init = jax.jit(lambda r: model.init(r, jax.random.normal(r, (1, n, 3)), z(n), z(n, n), jnp.ones((1,)),
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
    k_t, k_a, k_b, k_x, k_s = jax.random.split(rng, 5)
    mask = batch["mask"].astype(jnp.float32)
    b = mask.shape[0]
    pair = mask[:, :, None] * mask[:, None, :]  # the diagonal included (SemlaFlow's self_connect=True)
    t = flow.sample_time(k_t, b, *m.time_beta)
    x1 = batch["coords"] / coord_scale(m)
    xt = t[:, None, None] * x1 + (1.0 - t[:, None, None]) * batch["prior"]
    xt = (xt + m.coord_noise * jax.random.normal(k_x, xt.shape)) * mask[..., None]  # noise not centred (reference)
    types = flow.corrupt_categorical(k_a, batch["types"], t, len(elements(m)))
    bonds = flow.corrupt_bonds(k_b, batch["bonds"], t, len(chem.BOND_ORDERS), bool(m.symmetric_bond_noise))
    cond = None
    if model.self_condition:  # per batch, as SemlaFlow: half the steps see a first (gradient-free) prediction
        none = no_condition(xt, model.num_types)
        first = lambda: as_condition(model.apply({"params": params}, xt, types, bonds, t, mask,
                                                 with_projectors=False, cond=none)[0])
        cond = jax.lax.cond(jax.random.bernoulli(k_s, 0.5), first, lambda: none)
    out, feats = model.apply({"params": params}, xt, types, bonds, t, mask, cond=cond)
    parts = {"coords": masked_mean((out["coords"] - x1) ** 2, jnp.broadcast_to(mask[..., None], x1.shape)),
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
    return functools.partial(_sample, model=model, steps=int(m.sample_steps), coord_scale=coord_scale(m),
                             end=float(m.sample_end), noise=float(m.sample_noise),
                             symmetric_bonds=bool(m.symmetric_bond_noise))


@functools.partial(jax.jit, static_argnames=("model", "steps", "coord_scale", "end", "noise", "symmetric_bonds"))
def _sample(params, rng, mask, *, model: MoleculeREED, steps: int, coord_scale: float, end: float = 0.99,
            noise: float = 1.0, symmetric_bonds: bool = False):
    """SemlaFlow's `_generate`: the model is called at grid[0] ... grid[steps - 1] (`flow.time_grid`, 0 to
    `end`); each call's prediction drives one Euler step (coordinates) and one `flow.uniform_sample_step`
    (types, bonds; stochasticity `noise`); the result is the last prediction (no extra call at `end`).
    Charges are not integrated: they are the last prediction's argmax."""
    grid = jnp.asarray(flow.time_grid(steps, end), jnp.float32)
    nt, nb = model.num_types, len(chem.BOND_ORDERS)
    mask = mask.astype(jnp.float32)
    b, n = mask.shape
    k = jax.random.split(rng, 4)
    x = egnn.centre(jax.random.normal(k[0], (b, n, 3)), mask)
    a = jax.random.randint(k[1], (b, n), 0, nt)
    if symmetric_bonds:
        e = flow.symmetric(lambda kk, s: jax.random.randint(kk, s, 0, nb), k[2], (b, n, n))
    else:
        e = jax.random.randint(k[2], (b, n, n), 0, nb)
    apply = lambda x, a, e, t, cond: model.apply({"params": params}, x, a, e, jnp.full((b,), t), mask,
                                                 with_projectors=False, cond=cond)[0]

    def step(carry, i):
        x, a, e, key, prev, _ = carry
        t, t_next = grid[i], grid[i + 1]
        out = apply(x, a, e, t, prev if model.self_condition else None)
        dt = t_next - t
        key, ka, ke = jax.random.split(key, 3)
        x = (x + dt * (out["coords"] - x) / (1.0 - t)) * mask[..., None]
        tb, db = jnp.full((b,), t), jnp.full((b,), dt)
        a = flow.uniform_sample_step(ka, a, out["types"], tb, db, noise)
        e = flow.uniform_sample_step(ke, e, out["bonds"], tb, db, noise)
        if symmetric_bonds:
            up = jnp.triu(e, 1)
            e = up + jnp.swapaxes(up, 1, 2)
        return (x, a, e, key, as_condition(out), out), None

    shapes = jax.eval_shape(lambda: apply(x, a, e, grid[0], no_condition(x, nt) if model.self_condition else None))
    init = (x, a, e, k[3], no_condition(x, nt), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
    (_, _, _, _, _, out), _ = jax.lax.scan(step, init, jnp.arange(steps))
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
        batch["prior"] = flow.noise_for_batch(rng, batch["coords"], batch["mask"], coord_scale(self.m), self.m.ot)
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"inner": self.inner.get_state().decode(), "k": self.k}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        self.inner.set_state(s["inner"].encode())
        self.k = int(s["k"])
