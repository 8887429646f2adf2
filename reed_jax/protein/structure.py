"""Protein chains from PDB files, mmCIF files and the CATH 4.2 `chain_set.jsonl` format.

A `Chain` is what the protein track needs of a structure: the sequence (token ids, see `residues`),
backbone coordinates N, CA, C, O per residue in Angstrom ([L, 4, 3], NaN where an atom is missing),
and the experimental resolution (NaN when not stated). First model only; the first alternate
location of each atom; residues in file order, insertion codes kept apart.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import shlex
from collections.abc import Iterable, Iterator

import numpy as np

from reed_jax.protein import residues

BACKBONE = ("N", "CA", "C", "O")


class StructureError(ValueError):
    """A structure that cannot be read; the message names the file and chain."""


@dataclasses.dataclass
class Chain:
    name: str
    tokens: np.ndarray      # [L] int32
    coords: np.ndarray      # [L, 4, 3] float32, Angstrom, NaN = missing
    resolution: float = math.nan

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def sequence(self) -> str:
        return residues.decode(self.tokens)

    @property
    def backbone_mask(self) -> np.ndarray:
        """[L] bool: all four backbone atoms present."""
        return np.isfinite(self.coords).all(axis=(1, 2))


def _chain_from_atoms(name: str, atoms: Iterable[tuple], resolution: float) -> Chain:
    """atoms: (residue key, resname, atom name, xyz) in file order -> Chain."""
    order, resname, xyz = [], {}, {}
    for key, rn, an, p in atoms:
        if key not in resname:
            order.append(key)
            resname[key] = rn
        if an in BACKBONE and (key, an) not in xyz:  # first altloc wins
            xyz[(key, an)] = p
    if not order:
        raise StructureError(f"{name}: no residues")
    coords = np.full((len(order), 4, 3), np.nan, np.float32)
    for i, key in enumerate(order):
        for j, an in enumerate(BACKBONE):
            if (key, an) in xyz:
                coords[i, j] = xyz[(key, an)]
    seq = "".join(residues.THREE_TO_ONE.get(resname[k], "X") for k in order)
    return Chain(name, residues.encode(seq), coords, resolution)


def _open_text(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", "replace")


def parse_pdb(text: str, name: str = "pdb", chain: str | None = None) -> Chain:
    """PDB text -> the Chain `chain` (default: the first chain with amino acids)."""
    resolution = math.nan
    atoms: dict[str, list] = {}
    for line in text.splitlines():
        rec = line[:6]
        if rec.startswith("REMARK") and line[6:10].strip() == "2" and "RESOLUTION." in line:
            try:
                resolution = float(line.split("RESOLUTION.")[1].split()[0])
            except (ValueError, IndexError):
                pass
        elif rec == "ENDMDL":
            break
        elif rec in ("ATOM  ", "HETATM"):
            rn = line[17:20].strip()
            if rec == "HETATM" and rn not in residues.THREE_TO_ONE:
                continue  # ligands, water
            ch = line[21]
            key = (int(line[22:26]), line[26])
            try:
                p = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            except ValueError as e:
                raise StructureError(f"{name}: bad coordinates in line {line!r}") from e
            atoms.setdefault(ch, []).append((key, rn, line[12:16].strip(), p))
    if not atoms:
        raise StructureError(f"{name}: no ATOM records")
    if chain is None:
        chain = next(iter(atoms))
    if chain not in atoms:
        raise StructureError(f"{name}: no chain {chain!r}; chains {sorted(atoms)}")
    return _chain_from_atoms(f"{name}" if chain.strip() == "" else f"{name}.{chain}", atoms[chain], resolution)


def _cif_loops(text: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """The `loop_` tables of an mmCIF text: (column names, rows)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "loop_":
            cols, rows, i = [], [], i + 1
            while i < len(lines) and lines[i].startswith("_"):
                cols.append(lines[i].strip())
                i += 1
            buf: list[str] = []
            while i < len(lines) and lines[i].strip() not in ("loop_", "#") and not lines[i].startswith("_"):
                buf += shlex.split(lines[i], posix=True) if ("'" in lines[i] or '"' in lines[i]) else lines[i].split()
                while len(buf) >= len(cols):
                    rows.append(buf[:len(cols)])
                    buf = buf[len(cols):]
                i += 1
            yield cols, rows
        else:
            i += 1


def _cif_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(key + " ") or line.startswith(key + "\t"):
            return line[len(key):].strip()
    return None


def parse_mmcif(text: str, name: str = "cif", chain: str | None = None) -> Chain:
    """mmCIF text -> the Chain `chain` (auth_asym_id; default: the first with amino acids)."""
    resolution = math.nan
    for key in ("_refine.ls_d_res_high", "_reflns.d_resolution_high", "_em_3d_reconstruction.resolution"):
        v = _cif_value(text, key)
        if v not in (None, "?", "."):
            try:
                resolution = float(v)
                break
            except ValueError:
                pass
    for cols, rows in _cif_loops(text):
        if "_atom_site.Cartn_x" not in cols:
            continue
        c = {k.split(".", 1)[1]: j for j, k in enumerate(cols)}
        atoms: dict[str, list] = {}
        first_model = None
        for r in rows:
            if "pdbx_PDB_model_num" in c:
                first_model = first_model or r[c["pdbx_PDB_model_num"]]
                if r[c["pdbx_PDB_model_num"]] != first_model:
                    continue
            rn = r[c["label_comp_id"]]
            if r[c["group_PDB"]] == "HETATM" and rn not in residues.THREE_TO_ONE:
                continue
            ch = r[c.get("auth_asym_id", c["label_asym_id"])]
            seq_id = r[c.get("auth_seq_id", c["label_seq_id"])]
            ins = r[c["pdbx_PDB_ins_code"]] if "pdbx_PDB_ins_code" in c else "?"
            p = tuple(float(r[c[f"Cartn_{a}"]]) for a in "xyz")
            atoms.setdefault(ch, []).append(((seq_id, ins), rn, r[c["label_atom_id"]].strip('"'), p))
        if not atoms:
            break
        chain = chain if chain is not None else next(iter(atoms))
        if chain not in atoms:
            raise StructureError(f"{name}: no chain {chain!r}; chains {sorted(atoms)}")
        return _chain_from_atoms(f"{name}.{chain}", atoms[chain], resolution)
    raise StructureError(f"{name}: no _atom_site records")


def read_file(path: str, chain: str | None = None) -> Chain:
    """A .pdb/.ent/.cif file (optionally .gz) -> Chain; the name is the file stem."""
    base = os.path.basename(path)
    stem = base.split(".")[0]
    text = _open_text(path)
    if ".cif" in base:
        return parse_mmcif(text, stem, chain)
    return parse_pdb(text, stem, chain)


def read_cath_jsonl(path: str) -> list[Chain]:
    """CATH 4.2 `chain_set.jsonl` (Ingraham et al.): one JSON per line with `name`, `seq` and
    `coords` {N, CA, C, O: [L, 3] (null for missing)}."""
    out = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                seq = e["seq"]
                xyz = np.stack([np.asarray(e["coords"][a], dtype=np.float64) for a in BACKBONE], axis=1)
            except (KeyError, ValueError, TypeError) as err:
                raise StructureError(f"{path} line {n}: not a chain_set entry ({err})") from None
            if xyz.shape != (len(seq), 4, 3):
                raise StructureError(f"{path} line {n} ({e.get('name')}): coords {xyz.shape} for {len(seq)} residues")
            out.append(Chain(e["name"], residues.encode(seq), xyz.astype(np.float32)))
    return out


def read_cath_splits(path: str) -> dict[str, list[str]]:
    """`chain_set_splits.json` -> {'train': [...], 'validation': [...], 'test': [...]}."""
    with open(path) as fh:
        s = json.load(fh)
    missing = [k for k in ("train", "validation", "test") if k not in s]
    if missing:
        raise StructureError(f"{path}: splits file lacks {missing}")
    return {k: list(s[k]) for k in ("train", "validation", "test")}
