"""ANI-1x in JAX: atomic environment vectors, the 8-model ensemble, per-atom hidden features, energies.

    files = ani_files.load(".data/torchani-2.2.4-py3-none-any.whl")
    params = ani.params_of(files)
    out = ani.forward(params, species, coords, mask, layer=3)   # species [B, N] in 0..3 = H, C, N, O

Units: coordinates in Angstrom, energies in Hartree. Padded batches: `mask` [B, N] is 1 for real atoms;
padding atoms neither contribute to nor receive environment terms (their outputs are zeroed).

The AEV (Smith, Isayev, Roitberg 2017, in NeuroChem's convention): for atom i with neighbours j
(distance d_ij <= Rcr) the radial block of j's species gets
    0.25 exp(-EtaR (d_ij - ShfR)^2) fc(d_ij; Rcr),        fc(d; R) = 0.5 cos(pi d / R) + 0.5,
and for each unordered neighbour pair {j, k} (both within Rca) the block of the species pair gets
    2 ((1 + cos(theta_ijk - ShfZ)) / 2)^Zeta exp(-EtaA ((d_ij + d_ik)/2 - ShfA)^2) fc(d_ij; Rca) fc(d_ik; Rca),
with theta_ijk = arccos(0.95 cos(angle)) (the 0.95 keeps arccos finite), ordered
(EtaA, Zeta, ShfA, ShfZ) with ShfZ fastest. Radial blocks come first (species order), then the
angular blocks in upper-triangular pair order (HH, HC, HN, HO, CC, CN, ...). ANI-1x: 4 x 16 + 10 x 32 = 384.

Networks: one MLP per element and ensemble member (H 384-160-128-96-1, C 384-144-112-96-1,
N and O 384-128-112-96-1), CELU(alpha 0.1) after every layer but the last. A molecule's energy is
the sum of its atoms' outputs plus the self energies of its atoms (sae_linfit.dat), averaged over
the 8 members. `layer` k in 1..3 names the hidden activations after layer k's CELU (widths differ
by element in layers 1 and 2 and are zero-padded to the widest; layer 3 is 96 for every element).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.molecule import ani_files

SPECIES = ("H", "C", "N", "O")  # ANI-1x's index order (the AEV file's Atyp)
HIDDEN_LAYERS = (1, 2, 3)
POOLS = ("mean", "element")  # `pooled`: one mean over all atoms, or one mean per element concatenated


class UnsupportedElementError(ValueError):
    """A molecule holds an element the ANI-1x networks were not trained on."""


# ---------------------------------------------------------------------------------------------- species

def species_of(element_names, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Project atom-type indices [M, N] (into `element_names`) -> ANI species [M, N] (0..3, -1 = padding).

    Raises UnsupportedElementError naming the element and the first molecule holding it; use
    `unsupported` first to find the molecules to drop."""
    table = np.array([SPECIES.index(e) if e in SPECIES else -2 for e in element_names], np.int32)
    types, mask = np.asarray(types), np.asarray(mask).astype(bool)
    sp = np.where(mask, table[np.clip(types, 0, len(table) - 1)], -1)
    bad = np.argwhere(sp == -2)
    if len(bad):
        m, a = bad[0]
        raise UnsupportedElementError(
            f"molecule {m} atom {a} is {element_names[types[m, a]]!r}: ANI-1x covers only {SPECIES} "
            f"({len(np.unique(bad[:, 0]))} molecules affected; drop them with ani.unsupported)")
    return sp


def unsupported(element_lists) -> np.ndarray:
    """[M] bool: True for every molecule (a sequence of element symbols) with an element outside H, C, N, O."""
    return np.array([any(e not in SPECIES for e in els) for els in element_lists], bool)


# ---------------------------------------------------------------------------------------------- AEV

def _cutoff(d, rc):
    return 0.5 * jnp.cos(d * (jnp.pi / rc)) + 0.5


def aev(p: ani_files.AEVParams, species, coords, mask=None):
    """Atomic environment vectors.

    species: [B, N] int in 0..S-1 (S = len(p.species)), -1 or anything where mask = 0 for padding;
    coords: [B, N, 3] Angstrom; mask: [B, N] (default species >= 0). Returns [B, N, p.length] float32
    (zeros on padding atoms)."""
    coords = jnp.asarray(coords, jnp.float32)
    species = jnp.asarray(species)
    mask = (species >= 0) if mask is None else jnp.asarray(mask).astype(bool)
    S, B, N = len(p.species), coords.shape[0], coords.shape[1]
    onehot = jax.nn.one_hot(jnp.where(mask, species, 0), S) * mask[..., None]  # [B, N, S]
    vec = coords[:, None, :, :] - coords[:, :, None, :]  # [B, i, j, 3]: j - i
    pair = mask[:, :, None] & mask[:, None, :] & ~jnp.eye(N, dtype=bool)[None]
    d = jnp.sqrt(jnp.sum(vec ** 2, -1) + jnp.where(pair, 0.0, 1.0))  # padded pairs: d = 1, masked below
    # radial: [B, i, j, EtaR, ShfR] -> sum over j into j's species
    rad_on = pair & (d <= p.Rcr)
    rad = 0.25 * jnp.exp(-jnp.asarray(p.EtaR)[:, None] * (d[..., None, None] - jnp.asarray(p.ShfR)) ** 2)
    rad = (rad * _cutoff(d, p.Rcr)[..., None, None]).reshape(B, N, N, -1) * rad_on[..., None]
    radial = jnp.einsum("bijr,bjs->bisr", rad, onehot).reshape(B, N, -1)
    # angular: [B, i, j, k, EtaA, Zeta, ShfA, ShfZ] over ordered neighbour pairs j != k, halved
    ang_on = pair & (d <= p.Rca)
    fc = _cutoff(d, p.Rca) * ang_on  # [B, i, j]
    dot = jnp.einsum("bijx,bikx->bijk", vec, vec)
    dd = d[:, :, :, None] * d[:, :, None, :]
    cos = dot / jnp.maximum(dd, 1e-10)
    theta = jnp.arccos(0.95 * cos)  # [B, i, j, k]
    eta_a, zeta = jnp.asarray(p.EtaA), jnp.asarray(p.Zeta)
    shf_a, shf_z = jnp.asarray(p.ShfA), jnp.asarray(p.ShfZ)
    f1 = ((1 + jnp.cos(theta[..., None] - shf_z)) / 2)  # [B, i, j, k, Z]
    f1 = f1[..., None, :] ** zeta[:, None, None]  # [B, i, j, k, Zeta, Z]
    mean_d = (d[:, :, :, None] + d[:, :, None, :]) / 2
    f2 = jnp.exp(-eta_a[:, None] * (mean_d[..., None, None] - shf_a) ** 2)  # [B, i, j, k, EtaA, A]
    w = 2 * fc[:, :, :, None] * fc[:, :, None, :] * (1 - jnp.eye(N))  # [B, i, j, k]; j = k excluded
    terms = (f2[..., :, None, :, None] * f1[..., None, :, None, :]) * w[..., None, None, None, None]
    terms = terms.reshape(B, N, N, N, -1)  # [B, i, j, k, EtaA*Zeta*ShfA*ShfZ]
    full = jnp.einsum("bijkq,bjs,bkt->bistq", terms, onehot, onehot)  # [B, i, S, S, q], symmetric in (s, t)
    rows, cols = np.triu_indices(S)
    scale = np.where(rows == cols, 0.5, 1.0)[:, None]  # ordered pairs: same species counted twice
    angular = (full[:, :, rows, cols] * scale).reshape(B, N, -1)
    return jnp.concatenate([radial, angular], -1) * mask[..., None]


# ---------------------------------------------------------------------------------------------- networks

def params_of(files: ani_files.AniFiles) -> dict:
    """Stack the ensemble: {element: [{'w': [M, in, out], 'b': [M, out]} per layer]} (float32 arrays),
    plus 'self_energies' [S] float64 (numpy, Hartree) and 'aev' (the AEVParams)."""
    if files.aev.species != SPECIES:
        raise ani_files.AniFileError(f"{files.source}: species {files.aev.species}, this model expects {SPECIES}")
    nets = {}
    for e in SPECIES:
        nets[e] = [{"w": jnp.asarray(np.stack([m[e][k].weight.T for m in files.models])),
                    "b": jnp.asarray(np.stack([m[e][k].bias for m in files.models]))}
                   for k in range(len(files.models[0][e]))]
        acts = [l.activation for l in files.models[0][e]]
        if acts != ["celu"] * (len(acts) - 1) + ["identity"]:
            raise ani_files.AniFileError(f"{files.source}: element {e} activations {acts}; expected CELU then linear")
    return {"nets": nets, "self_energies": np.asarray(files.self_energies), "aev": files.aev}


def _celu(x, alpha: float = ani_files.CELU_ALPHA):
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0) / alpha))


def networks(nets: dict, species, features, members=None):
    """Per-element MLPs of the chosen ensemble members on every atom.

    species: [B, N] (0..3, -1 padding); features: [B, N, D] AEVs; members: indices into the ensemble
    (None = all M). Returns (atomic [M, B, N] network energies in Hartree without self energies,
    {k: [M, B, N, W_k]} the activations after layer k's CELU for k in HIDDEN_LAYERS, zeros on padding
    and beyond an element's width W_k = the widest element's)."""
    atomic, hidden = 0.0, {k: 0.0 for k in HIDDEN_LAYERS}
    for s, e in enumerate(SPECIES):
        sel = (species == s).astype(jnp.float32)
        x = features
        for k, lay in enumerate(nets[e], 1):
            w, b = lay["w"], lay["b"]
            if members is not None:
                w, b = w[jnp.asarray(members)], b[jnp.asarray(members)]
            x = (jnp.einsum("bnd,mdo->mbno", x, w) if x.ndim == 3 else jnp.einsum("mbnd,mdo->mbno", x, w)) \
                + b[:, None, None, :]
            if k < len(nets[e]):
                x = _celu(x)
            if k in hidden:
                width = max(nets[f][k - 1]["b"].shape[-1] for f in SPECIES)
                hidden[k] = hidden[k] + jnp.pad(x, [(0, 0)] * 3 + [(0, width - x.shape[-1])]) * sel[..., None]
        atomic = atomic + x[..., 0] * sel
    return atomic, hidden


def forward(params: dict, species, coords, mask=None, layer: int = 3, members=None) -> dict:
    """AEVs and ensemble outputs for a padded batch.

    species [B, N] (0..3; padding -1 or masked), coords [B, N, 3] Angstrom, mask [B, N]. Returns
    {'aev' [B, N, 384], 'atomic' [M, B, N] (Hartree, no self energies), 'hidden' [M, B, N, W] after
    layer `layer` (1..3), 'hidden_all' {k: [M, B, N, W_k]}, 'energy_nn' [M, B] (sum of the atomic
    network energies, Hartree)}."""
    if layer not in HIDDEN_LAYERS:
        raise ValueError(f"ANI hidden layer {layer} is not one of {HIDDEN_LAYERS}")
    species = jnp.asarray(species)
    mask = (species >= 0) if mask is None else jnp.asarray(mask).astype(bool)
    species = jnp.where(mask, species, -1)
    x = aev(params["aev"], species, coords, mask)
    atomic, hidden = networks(params["nets"], species, x, members)
    return {"aev": x, "atomic": atomic, "hidden": hidden[layer], "hidden_all": hidden, "energy_nn": atomic.sum(-1)}


def self_energy(params: dict, species, mask=None) -> np.ndarray:
    """[B] float64 Hartree: the summed self energies of each molecule's real atoms."""
    species = np.asarray(species)
    mask = (species >= 0) if mask is None else np.asarray(mask).astype(bool)
    return np.where(mask, params["self_energies"][np.clip(species, 0, None)], 0.0).sum(-1)


def energies(params: dict, species, coords, mask=None) -> np.ndarray:
    """[B] float64 total energies in Hartree (ensemble mean of the network sums, float32, plus the
    self energies added in float64 as torchani does)."""
    out = jax.jit(lambda s, c, m: forward(params, s, c, m)["energy_nn"])(
        jnp.asarray(species), jnp.asarray(coords, jnp.float32),
        jnp.asarray((np.asarray(species) >= 0) if mask is None else mask))
    return np.asarray(out, np.float64).mean(0) + self_energy(params, species, mask)


def pooled(params: dict, species, coords, mask, layer: int = 3, member: int = 0, pool: str = "mean"):
    """One ensemble member's hidden activations after `layer`, pooled over each molecule's real atoms
    (jit-able). pool='mean': [B, W], the mean over all real atoms (W = 96 for layer 3); pool='element':
    [B, 4 W], the mean over the atoms of each element H, C, N, O (SPECIES order) concatenated, zeros for
    an element the molecule lacks. ANI's networks are per element, so hidden unit i of the H network
    and unit i of the C network are unrelated: 'mean' sums four different feature spaces, 'element'
    keeps them apart."""
    if pool not in POOLS:
        raise ValueError(f"ANI pooling {pool!r} is not one of {POOLS}")
    out = forward(params, species, coords, mask, layer, members=(member,))
    m = jnp.asarray(mask).astype(jnp.float32)
    h = out["hidden"][0] * m[..., None]  # [B, N, W]
    if pool == "mean":
        return h.sum(1) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    sel = jax.nn.one_hot(jnp.where(m > 0, jnp.asarray(species), -1), len(SPECIES)) * m[..., None]  # [B, N, S]
    sums = jnp.einsum("bns,bnw->bsw", sel, h)
    means = sums / jnp.maximum(sel.sum(1), 1.0)[..., None]  # [B, S, W]
    return means.reshape(means.shape[0], -1)
