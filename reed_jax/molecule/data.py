"""Molecule sources: QM9 as the `qm9pack` wheel ships it, GEOM-Drugs as EDM-style arrays or SDF.

Every reader returns `Molecule`s: an id and an RDKit Mol with explicit hydrogens, perceived bonds and
formal charges (Kekulé form) and one 3D conformer. QM9 rows give elements + DFT coordinates
(B3LYP/6-31G(2df,p), Angstrom) + the dataset's SMILES; bonds and charges come from the coordinates
(chem.from_xyz), or, where that graph differs from the dataset's SMILES (tautomers, zwitterions),
from the SMILES laid on the 3D connectivity; molecules matching neither are dropped (count logged).

Splits: QM9's standard sizes (EDM / SemlaFlow: 100,000 train, 17,748 validation, the remaining
13,083 test) by a seeded permutation of the 130,831 molecules; `train_limit` / `eval_limit` take
the first molecules of each split for CPU-sized runs.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import io
import os
import zipfile

import numpy as np

from reed_jax.data import records
from reed_jax.molecule import chem

QM9_PARTS = tuple(f"qm9pack/data/qm9_part{i}.csv" for i in (1, 2, 3))
QM9_SPLIT = {"train": 100_000, "validation": 17_748}  # the test split is the rest (13,083)


QM9_PROPERTIES = ("Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au",
                  "Heatcapacity_Cv_cal_mol_K")  # mu, alpha, HOMO, LUMO, gap, Cv: the stand-in encoder's labels


@dataclasses.dataclass
class Molecule:
    name: str
    mol: object  # rdkit.Chem.Mol with one conformer
    props: np.ndarray | None = None  # [len(QM9_PROPERTIES)] float32 for QM9


def qm9_rows(wheel: str) -> list[dict]:
    """Every row of the qm9pack wheel's CSV parts ({Index, SMILES, Elements, XYZ_Ang, ...} strings)."""
    if not wheel or not os.path.exists(wheel):
        raise records.DataError(f"molecule.qm9_wheel={wheel!r} does not exist (`make data` downloads "
                                f"qm9pack-1.0.3-py3-none-any.whl into .data/)")
    rows = []
    with zipfile.ZipFile(wheel) as zf:
        missing = [p for p in QM9_PARTS if p not in zf.namelist()]
        if missing:
            raise records.DataError(f"{wheel} has no {missing}: not a qm9pack wheel")
        for part in QM9_PARTS:
            with zf.open(part) as fh:
                rows += list(csv.DictReader(io.TextIOWrapper(fh)))
    return rows


def qm9_split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Row indices of the standard split sizes under a seeded permutation (sizes scaled if n differs)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr = round(n * QM9_SPLIT["train"] / 130_831)
    n_va = round(n * QM9_SPLIT["validation"] / 130_831)
    return {"train": perm[:n_tr], "validation": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}


def qm9_molecule(row: dict) -> Molecule | None:
    """One QM9 row -> Molecule, or None when no bond assignment on the coordinates gives the row's SMILES."""
    elements = ast.literal_eval(row["Elements"])
    coords = np.asarray(ast.literal_eval(row["XYZ_Ang"]), np.float64)
    mol = chem.from_xyz_and_smiles(elements, coords, row["SMILES"])
    if mol is None:
        return None
    props = np.array([float(row[k]) for k in QM9_PROPERTIES], np.float32)
    return Molecule(f"qm9_{int(row['Index']):06d}", mol, props)


def read_qm9(wheel: str, seed: int, limits: dict[str, int], log=print) -> dict[str, list[Molecule]]:
    """{split: [Molecule]} for the splits in `limits` (0 = the whole split)."""
    from tqdm import tqdm

    rows = qm9_rows(wheel)
    idx = qm9_split_indices(len(rows), seed)
    out = {}
    for split, limit in limits.items():
        take = idx[split] if not limit else idx[split][:limit]
        mols = [qm9_molecule(rows[i]) for i in tqdm(take, desc=f"qm9 {split}", unit="mol", dynamic_ncols=True,
                                                     mininterval=2.0)]
        kept = [m for m in mols if m is not None]
        log(f"qm9 {split}: {len(kept)} of {len(take)} molecules (skipped {len(take) - len(kept)} whose bonds "
            f"RDKit cannot perceive as the dataset's SMILES)")
        out[split] = kept
    return out


def read_edm_arrays(path: str, elements_by_z: dict[int, str] | None = None) -> list[Molecule]:
    """EDM-style GEOM arrays: one [M, 5] .npy of rows (conformer id, atomic number, x, y, z), a
    conformer's rows contiguous. Bonds and charges perceived from the coordinates; conformers RDKit
    cannot assign are skipped."""
    from rdkit.Chem import GetPeriodicTable

    a = np.load(path)
    if a.ndim != 2 or a.shape[1] != 5:
        raise records.DataError(f"{path}: EDM-style arrays are [M, 5] (id, Z, x, y, z); got shape {a.shape}")
    pt = GetPeriodicTable()
    ids = a[:, 0].astype(np.int64)
    starts = np.concatenate([[0], np.nonzero(np.diff(ids))[0] + 1, [len(a)]])
    out = []
    for s, e in zip(starts[:-1], starts[1:]):
        z = a[s:e, 1].astype(int)
        mol = chem.from_xyz([pt.GetElementSymbol(int(v)) for v in z], a[s:e, 2:5])
        if mol is not None:
            out.append(Molecule(f"conf_{ids[s]}", mol))
    return out


def read_sdf_dir(path: str) -> list[Molecule]:
    """Molecules with conformers from an SDF file or a folder of them (hydrogens kept, Kekulé form)."""
    Chem = chem._chem()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.endswith(".sdf"))
    if not files:
        raise records.DataError(f"molecule.sdf_path={path!r}: no .sdf files")
    out = []
    for f in files:
        for i, m in enumerate(chem.read_sdf(f, sanitize=True)):
            if m.GetNumConformers() == 0:
                continue
            Chem.Kekulize(m, clearAromaticFlags=True)
            name = m.GetProp("_Name") if m.HasProp("_Name") and m.GetProp("_Name") else f"{os.path.basename(f)}_{i}"
            out.append(Molecule(name, m))
    return out
