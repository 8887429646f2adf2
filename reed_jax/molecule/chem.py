"""Molecules as padded arrays and back, through RDKit.

A molecule of n <= N atoms is `types` [N] int32 (index into the config's element list),
`charges` [N] int32 (index into CHARGES), `bonds` [N, N] int32 (index into BOND_ORDERS, symmetric,
zero diagonal; Kekulé form, so aromatic rings are alternating single/double), `coords` [N, 3]
float32 Angstrom and `mask` [N] float32 (1 for real atoms, first n positions). Hydrogens are
explicit atoms.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QM9_ELEMENTS = ("H", "C", "N", "O", "F")
DRUG_ELEMENTS = ("H", "B", "C", "N", "O", "F", "Al", "Si", "P", "S", "Cl", "As", "Br", "I", "Hg", "Bi")
CHARGES = (0, 1, -1, 2, -2, 3)  # formal charge of class i (0 first, the common case)
BOND_ORDERS = (0, 1, 2, 3)  # class 0 = no bond; Kekulé orders otherwise


def _chem():
    from rdkit import Chem, RDLogger
    RDLogger.DisableLog("rdApp.*")
    return Chem


def from_xyz(elements: Sequence[str], coords: np.ndarray, charge: int = 0):
    """RDKit Mol with bonds and formal charges perceived from 3D coordinates (xyz2mol, as
    `rdDetermineBonds.DetermineBonds`), Kekulé form; None when RDKit cannot find a consistent
    assignment (strained cages: see the precompute's skip count)."""
    Chem = _chem()
    from rdkit.Chem import rdDetermineBonds

    mol = from_xyz_unbonded(elements, coords)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=charge)
        Chem.SanitizeMol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # RDKit raises ValueError/RuntimeError/its own types for unassignable molecules
        return None
    return mol


def from_xyz_and_smiles(elements: Sequence[str], coords: np.ndarray, smiles: str):
    """Mol whose bond orders and charges come from `smiles` (a template) laid on the connectivity
    perceived from the coordinates; None when the two graphs do not match."""
    Chem = _chem()
    from rdkit.Chem import AllChem, rdDetermineBonds

    mol = from_xyz(elements, coords)  # first try: perceive everything from 3D
    ref = Chem.MolFromSmiles(smiles)
    if ref is None:
        return None
    want = Chem.MolToSmiles(ref, isomericSmiles=False)
    if mol is not None and canonical_smiles(mol, isomeric=False) == want:
        return mol
    try:  # second: connectivity from 3D, bond orders and charges from the SMILES
        bare = Chem.Mol(from_xyz_unbonded(elements, coords))
        rdDetermineBonds.DetermineConnectivity(bare)
        mol = AllChem.AssignBondOrdersFromTemplate(Chem.AddHs(ref), bare)
        Chem.SanitizeMol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:
        return None
    return mol if canonical_smiles(mol, isomeric=False) == want else None


def from_xyz_unbonded(elements: Sequence[str], coords: np.ndarray):
    """Atoms and one conformer, no bonds."""
    Chem = _chem()
    from rdkit.Geometry import Point3D

    m = Chem.RWMol()
    conf = Chem.Conformer(len(elements))
    for i, (e, p) in enumerate(zip(elements, np.asarray(coords, np.float64))):
        m.AddAtom(Chem.Atom(e))
        conf.SetAtomPosition(i, Point3D(*p))
    m.AddConformer(conf, assignId=True)
    return m.GetMol()


def canonical_smiles(mol, isomeric: bool = True) -> str | None:
    """Canonical heavy-atom SMILES of a sanitizable copy of `mol` (stereo from 3D when isomeric), else None."""
    Chem = _chem()
    try:
        m = Chem.Mol(mol)
        Chem.SanitizeMol(m)
        return Chem.MolToSmiles(Chem.RemoveHs(m), isomericSmiles=isomeric)
    except Exception:
        return None


def to_arrays(mol, elements: Sequence[str], max_atoms: int) -> dict[str, np.ndarray]:
    """Mol (with a conformer) -> padded arrays (see module docstring). Raises ValueError naming an
    element, charge or bond outside the vocabulary, or a molecule larger than max_atoms."""
    n = mol.GetNumAtoms()
    if n > max_atoms:
        raise ValueError(f"molecule of {n} atoms exceeds max_atoms={max_atoms}")
    out = {"types": np.zeros(max_atoms, np.int32), "charges": np.zeros(max_atoms, np.int32),
           "bonds": np.zeros((max_atoms, max_atoms), np.int32), "coords": np.zeros((max_atoms, 3), np.float32),
           "mask": np.zeros(max_atoms, np.float32)}
    for a in mol.GetAtoms():
        i, sym, q = a.GetIdx(), a.GetSymbol(), a.GetFormalCharge()
        if sym not in elements:
            raise ValueError(f"element {sym} is not in the element list {tuple(elements)}")
        if q not in CHARGES:
            raise ValueError(f"formal charge {q} is not in {CHARGES}")
        out["types"][i], out["charges"][i] = elements.index(sym), CHARGES.index(q)
    for b in mol.GetBonds():
        order = b.GetBondTypeAsDouble()
        if order not in (1.0, 2.0, 3.0):
            raise ValueError(f"bond order {order} (kekulize first)")
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        out["bonds"][i, j] = out["bonds"][j, i] = int(order)
    out["coords"][:n] = mol.GetConformer().GetPositions()
    out["mask"][:n] = 1.0
    return out


def to_mol(types: np.ndarray, charges: np.ndarray, bonds: np.ndarray, coords: np.ndarray, mask: np.ndarray,
           elements: Sequence[str]):
    """Padded arrays -> RDKit Mol (unsanitized: generated molecules may be invalid) with one conformer.
    A formal charge above the atomic number (e.g. H+2, which a generator can emit) is clipped to it."""
    Chem = _chem()
    from rdkit.Geometry import Point3D

    idx = np.nonzero(np.asarray(mask) > 0)[0]
    m = Chem.RWMol()
    conf = Chem.Conformer(len(idx))
    for new, i in enumerate(idx):
        a = Chem.Atom(elements[int(types[i])])
        a.SetFormalCharge(min(CHARGES[int(charges[i])], a.GetAtomicNum()))  # RDKit has no atom with < 0 electrons
        a.SetNoImplicit(True)
        m.AddAtom(a)
        conf.SetAtomPosition(new, Point3D(*map(float, coords[i])))
    order = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            k = int(bonds[idx[a], idx[b]])
            if k:
                m.AddBond(a, b, order[BOND_ORDERS[k]])
    m.AddConformer(conf, assignId=True)
    return m.GetMol()


def write_sdf(mols, path: str) -> None:
    """Molecules (3D, explicit H) -> one SDF file; written under a temporary name, then renamed."""
    import os
    Chem = _chem()
    w = Chem.SDWriter(path + ".tmp")
    w.SetKekulize(False)
    for m in mols:
        m = Chem.Mol(m)
        m.UpdatePropertyCache(strict=False)  # generated molecules may be unsanitizable: write them as they are
        w.write(m)
    w.close()
    os.replace(path + ".tmp", path)


def read_sdf(path: str, sanitize: bool = False, remove_hs: bool = False) -> list:
    """Every molecule of an SDF file (None entries for unreadable blocks dropped)."""
    Chem = _chem()
    return [m for m in Chem.SDMolSupplier(path, sanitize=sanitize, removeHs=remove_hs) if m is not None]
