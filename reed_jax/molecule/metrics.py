"""Molecule quality metrics (host-side, RDKit), as the 3D generation literature reports them.

- atom stability: an atom is stable when the sum of its bond orders (Kekulé, from the predicted
  bonds) is an allowed valence for its element *and formal charge* (VALENCES, strict: radicals are
  unstable); molecule stability: every atom stable. `atom_stability_semlaflow` /
  `mol_stability_semlaflow`: the same with SemlaFlow's table (VALENCES_SEMLAFLOW, what the REED
  reference reports: e.g. neutral C with 3 bonds, neutral N with 2 and H+ with 0 count as stable).
- validity: RDKit sanitisation succeeds; fragment validity: valid and one connected fragment.
- uniqueness: distinct canonical SMILES (heavy atoms, no stereo: generated molecules carry none)
  among the fragment-valid; novelty: fraction of those not in the training set's SMILES.
- MMFF energy (kcal/mol) of the generated conformer and strain = that energy minus the energy after
  MMFF relaxation from it, on the valid molecules MMFF can type (medians reported).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from reed_jax.molecule import chem

# (element, formal charge) -> allowed total bond orders (explicit hydrogens are bonds)
VALENCES = {
    "H": {0: (1,)}, "B": {0: (3,), -1: (4,)}, "C": {0: (4,), 1: (3,), -1: (3,)},
    "N": {0: (3,), 1: (4,), -1: (2,)}, "O": {0: (2,), 1: (3,), -1: (1,)}, "F": {0: (1,)},
    "Al": {0: (3,)}, "Si": {0: (4,)}, "P": {0: (3, 5), 1: (4,)}, "S": {0: (2, 4, 6), 1: (3,), -1: (1,)},
    "Cl": {0: (1,)}, "As": {0: (3, 5)}, "Br": {0: (1,)}, "I": {0: (1,)}, "Hg": {0: (1, 2)}, "Bi": {0: (3, 5)},
}


# SemlaFlow's table (`util/metrics.py` ALLOWED_VALENCIES), as {element: {charge: valences}} with None
# for "any charge"; an element or charge missing from it is unstable.
VALENCES_SEMLAFLOW = {
    "H": {0: (1,), 1: (0,), -1: (0,)}, "C": {0: (3, 4), 1: (3,), -1: (3,)}, "N": {0: (2, 3), 1: (2, 3, 4), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)}, "F": {0: (1,), -1: (0,)}, "B": {None: (3,)}, "Al": {None: (3,)},
    "Si": {None: (4,)}, "P": {0: (3, 5), 1: (4,)}, "S": {0: (2, 6), 1: (2, 3), 2: (4,), 3: (5,), -1: (3,)},
    "Cl": {None: (1,)}, "As": {None: (3,)}, "Br": {0: (1,), 1: (2,)}, "I": {None: (1,)}, "Hg": {None: (1, 2)},
    "Bi": {None: (3, 5)}, "Se": {None: (2, 4, 6)},
}


def atom_stable(types: np.ndarray, charges: np.ndarray, bonds: np.ndarray, mask: np.ndarray,
                element_names: Sequence[str], table: dict = VALENCES) -> np.ndarray:
    """[N] bool for one padded molecule (False on padding); `table` VALENCES or VALENCES_SEMLAFLOW."""
    idx = np.nonzero(mask > 0)[0]
    order = np.asarray(chem.BOND_ORDERS)[bonds]
    valence = order[np.ix_(idx, idx)].sum(1)
    out = np.zeros(len(mask), bool)
    for k, i in enumerate(idx):
        by_charge = table.get(element_names[int(types[i])], {})
        allowed = by_charge.get(None, by_charge.get(chem.CHARGES[int(charges[i])], ()))
        out[i] = int(valence[k]) in allowed
    return out


def sanitized(mol):
    """A sanitized copy, or None when RDKit rejects the molecule."""
    Chem = chem._chem()
    try:
        m = Chem.Mol(mol)
        Chem.SanitizeMol(m)
        return m
    except Exception:
        return None


def mmff_energy_and_strain(mol, max_iters: int = 2000) -> tuple[float, float] | None:
    """(energy of the given conformer, energy - relaxed energy) in kcal/mol under MMFF94, or None."""
    from rdkit.Chem import rdForceFieldHelpers as ff

    Chem = chem._chem()
    m = Chem.Mol(mol)
    props = ff.MMFFGetMoleculeProperties(m) if ff.MMFFHasAllMoleculeParams(m) else None
    if props is None:
        return None
    field = ff.MMFFGetMoleculeForceField(m, props)
    e0 = field.CalcEnergy()
    field.Minimize(maxIts=max_iters)
    return float(e0), float(e0 - field.CalcEnergy())


def evaluate(samples: dict, element_names: Sequence[str], train_smiles: Iterable[str] = (),
             energy_samples: int = 0) -> tuple[dict, list]:
    """samples: {types, charges, bonds, coords, mask} numpy [S, ...] -> (metrics, RDKit mols)."""
    Chem = chem._chem()
    train_smiles = set(train_smiles)
    atoms_ok, atoms_n, mols_ok, valid, frag_valid, smiles, energies, strains, mols = 0, 0, 0, 0, 0, [], [], [], []
    atoms_ref, mols_ref = 0, 0
    for i in range(len(samples["mask"])):
        s = {k: np.asarray(v[i]) for k, v in samples.items()}
        st = atom_stable(s["types"], s["charges"], s["bonds"], s["mask"], element_names)
        st_ref = atom_stable(s["types"], s["charges"], s["bonds"], s["mask"], element_names, VALENCES_SEMLAFLOW)
        n = int((s["mask"] > 0).sum())
        atoms_ok += int(st.sum())
        atoms_ref += int(st_ref.sum())
        atoms_n += n
        mols_ok += int(n > 0 and st[:n].all())
        mols_ref += int(n > 0 and st_ref[:n].all())
        mol = chem.to_mol(s["types"], s["charges"], s["bonds"], s["coords"], s["mask"], element_names)
        mols.append(mol)
        m = sanitized(mol)
        if m is None or n == 0:
            continue
        valid += 1
        if len(Chem.GetMolFrags(m)) == 1:
            frag_valid += 1
            smiles.append(chem.canonical_smiles(m, isomeric=False))
            if len(energies) < energy_samples:
                r = mmff_energy_and_strain(m)
                if r is not None:
                    energies.append(r[0])
                    strains.append(r[1])
    total = len(samples["mask"])
    unique = set(smiles)
    out = {"atom_stability": atoms_ok / max(atoms_n, 1), "mol_stability": mols_ok / max(total, 1),
           "atom_stability_semlaflow": atoms_ref / max(atoms_n, 1), "mol_stability_semlaflow": mols_ref / max(total, 1),
           "validity": valid / max(total, 1), "fragment_validity": frag_valid / max(total, 1),
           "uniqueness": len(unique) / max(len(smiles), 1),
           "novelty": (len(unique - train_smiles) / max(len(unique), 1)) if train_smiles else float("nan")}
    if energy_samples:
        out["energy_median"] = float(np.median(energies)) if energies else float("nan")
        out["strain_median"] = float(np.median(strains)) if strains else float("nan")
    return out, mols
