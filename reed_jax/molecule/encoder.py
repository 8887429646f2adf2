"""The offline stand-in for a pretrained 3D molecular encoder (Uni-Mol, Frad): an invariant EGNN the
project trains once on QM9's DFT properties, frozen, whose pooled vector is the REED target.

`PropertyEncoder`: the EGNN over clean molecules (t = 1), atom features summed over real atoms,
one hidden layer to `dim` (the target: `embed` [B, dim]), and a linear head to the six
standardised properties (mu, alpha, HOMO, LUMO, gap, Cv). Fitted with Adam on the training split
(MSE on standardised labels) and cached under `<data dir>/encoders/` like the digits encoder; the
precompute logs its validation MAE per property in the dataset's units.

`ani_pooled`: the pretrained alternative (targets encoder 'ani1x'): the ANI-1x potential
(reed_jax/molecule/ani.py, weights read from the torchani 2.2.4 wheel), one ensemble member's
per-atom activations after a hidden layer, averaged over real atoms (or per element, concatenated:
`molecule.ani_pool`). One member, not the ensemble
mean: the eight members were trained independently, so hidden unit i of one is unrelated to unit i
of another and their average would blur eight unrelated feature sets into one (their energies,
which do correspond, are what the ensemble averages).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from reed_jax.molecule import chem, egnn

ANI_ENCODER = "ani1x"  # targets.<name>.encoder of the pretrained ANI-1x target


class PropertyEncoder(nn.Module):
    num_types: int
    dim: int = 128
    hidden: int = 64
    layers: int = 4
    num_props: int = 6

    @nn.compact
    def __call__(self, coords, types, charges, bonds, mask):
        mask = mask.astype(jnp.float32)
        nodes = jnp.concatenate([jax.nn.one_hot(types, self.num_types), jax.nn.one_hot(charges, len(chem.CHARGES))], -1)
        _, h, _, _ = egnn.EGNN(self.hidden, 16, self.layers, name="egnn")(
            coords, nodes, jax.nn.one_hot(bonds, len(chem.BOND_ORDERS)), mask)
        pooled = (h * mask[..., None]).sum(1)
        embed = nn.Dense(self.dim, name="embed")(nn.silu(nn.Dense(self.dim, name="hidden")(pooled)))
        return {"embed": embed, "props": nn.Dense(self.num_props, name="head")(nn.silu(embed))}


def fit(module: PropertyEncoder, arrays: dict, props: np.ndarray, *, seed: int, steps: int, batch_size: int = 64,
        lr: float = 1e-3) -> tuple[dict, np.ndarray, np.ndarray]:
    """arrays: {types, charges, bonds, coords, mask} [M, ...]; props [M, P]. Returns (params, mean, std)."""
    mean, std = props.mean(0), props.std(0) + 1e-6
    y_all = jnp.asarray((props - mean) / std)
    x_all = {k: jnp.asarray(v) for k, v in arrays.items()}
    rng = jax.random.PRNGKey(seed)
    params = module.init(rng, *(x_all[k][:1] for k in ("coords", "types", "charges", "bonds", "mask")))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, key):
        idx = jax.random.randint(key, (batch_size,), 0, y_all.shape[0])

        def loss_fn(p):
            out = module.apply({"params": p}, *(x_all[k][idx] for k in ("coords", "types", "charges", "bonds", "mask")))
            return jnp.mean((out["props"] - y_all[idx]) ** 2)

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    for i in range(steps):
        params, opt, _ = step(params, opt, jax.random.fold_in(rng, i))
    return params, mean, std


def apply(module: PropertyEncoder, params, arrays: dict, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{embed [M, dim], props [M, P] (standardised)} for every molecule, in fixed-size batches."""
    fn = jax.jit(lambda p, b: module.apply({"params": p}, b["coords"], b["types"], b["charges"], b["bonds"],
                                           b["mask"]))
    from reed_jax.data import pipeline

    out, total = {"embed": [], "props": []}, len(arrays["mask"])
    for i, b in enumerate(pipeline.pad_batches(arrays, batch_size)):
        r = jax.device_get(fn(params, b))
        n = min(batch_size, total - i * batch_size)
        for k in out:
            out[k].append(np.asarray(r[k])[:n])
    return {k: np.concatenate(v) for k, v in out.items()}


def ani_pooled(wheel: str, arrays: dict, element_names, *, layer: int = 3, member: int = 0, pool: str = "mean",
               batch_size: int = 64) -> np.ndarray:
    """[M, W] float32: ANI-1x member `member`'s activations after hidden layer `layer` (W = 96 for
    layer 3; 160 / 128 zero-padded for layers 1 / 2), averaged over each molecule's real atoms
    (pool='mean'), or [M, 4 W]: averaged over the atoms of each element H, C, N, O and concatenated
    (pool='element'; zeros for an element the molecule lacks; see ani.pooled).

    arrays: {types [M, N] (indices into element_names), coords [M, N, 3] Angstrom, mask [M, N]};
    every molecule must hold only H, C, N, O (drop the others first: ani.unsupported)."""
    from reed_jax.data import pipeline
    from reed_jax.molecule import ani, ani_files

    params = ani.params_of(ani_files.load(wheel))
    if not 0 <= member < len(params["nets"]["H"][0]["w"]):
        raise ValueError(f"ANI ensemble member {member} is outside 0..{len(params['nets']['H'][0]['w']) - 1}")
    species = ani.species_of(element_names, arrays["types"], arrays["mask"])
    fn = jax.jit(lambda s, c, m: ani.pooled(params, s, c, m, layer, member, pool))
    data = {"species": species.astype(np.int32), "coords": arrays["coords"].astype(np.float32),
            "mask": arrays["mask"].astype(np.float32)}
    out, total = [], len(species)
    for i, b in enumerate(pipeline.pad_batches(data, batch_size)):
        n = min(batch_size, total - i * batch_size)
        out.append(np.asarray(jax.device_get(fn(b["species"], b["coords"], b["mask"])))[:n])
    return np.concatenate(out).astype(np.float32)
