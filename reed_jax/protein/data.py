"""Protein sources -> filtered chains -> padded examples (+ targets) -> ArrayRecord shards.

Sources (`protein.source`):
- `mdanalysistests`: the 52 single-chain PDB files of the `mdanalysistests` sdist
  (`MDAnalysisTests/data/dssp/*.pdb.gz`), read straight from the .tar.gz (`protein.archive`);
- `pdb_dir`: a folder of .pdb/.ent/.cif files (optionally .gz), one chain each (the first), with an
  optional `protein.cluster_file` (one cluster per line, whitespace-separated member names) so the
  held-out split takes whole clusters;
- `cath`: CATH 4.2 `chain_set.jsonl` + `chain_set_splits.json` in `protein.cath_dir` (its
  train / validation split as given);
- `pdb2021`: ProteinMPNN's training set (`pdb_2021aug02/`: `list.csv`, `valid_clusters.txt`,
  `test_clusters.txt`, `pdb/<id[1:3]>/<id>.pt` chain files with `seq`, `xyz` [L, 14, 3], `mask`) in
  `protein.pdb2021_dir`, read with the torch-free reader (reed_jax.convert.torch_file: tensors and
  containers only, the `weights_only=True` idea); one chain per cluster (the first listed),
  validation = `valid_clusters.txt`, the test clusters left out.
Filters: length in [min_length, max_length], resolution <= max_resolution (unknown passes), X
fraction <= max_x_fraction; every skip is counted and printed. Without a given split, a
`validation_fraction` of the structures (clusters) is held out, chosen by `split_seed`.

Example fields (padded to L = protein.max_length so every batch has one shape): `coords`
[L, 4, 3] float32 (0 where missing), `mask` [L] float32 (1 = residue with a full backbone),
`tokens` [L] int32 (X on padding), `residue_idx` [L] int32, `length` [] int32, `index` [] int64, and
`target/<name>` per target: the teacher's outputs (protein.teacher) or imported AlphaFold3-style
`embeddings.npz` (single [N, 384], pair [N, N, 128], structure [N, 768]; `targets.<name>.source` is a
folder with `<chain name>.npz`, each checked for length against its chain). Edge targets are stored
at kNN edges with `target/<name>_idx`.
"""
from __future__ import annotations

import gzip
import math
import os
import tarfile

import numpy as np

from reed_jax.data import records
from reed_jax.protein import residues, structure

DSSP_DIR = "MDAnalysisTests/data/dssp/"


def read_mdanalysistests(archive: str) -> list[structure.Chain]:
    """The dssp test chains of the mdanalysistests sdist, without installing it."""
    if not archive or not os.path.exists(archive):
        raise records.DataError(f"protein.archive={archive!r} does not exist: `make data` downloads the "
                                f"mdanalysistests sdist into .data/ (pip download, at install time)")
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            base = os.path.basename(m.name)
            if DSSP_DIR in m.name and base.endswith(".pdb.gz") and "_failing" not in base:
                text = gzip.decompress(tar.extractfile(m).read()).decode("utf-8", "replace")
                out.append(structure.parse_pdb(text, base.split(".")[0]))
    if not out:
        raise records.DataError(f"protein.archive={archive!r} holds no {DSSP_DIR}*.pdb.gz files")
    return out


def read_pdb_dir(folder: str) -> list[structure.Chain]:
    if not os.path.isdir(folder):
        raise records.DataError(f"protein.pdb_dir={folder!r} does not exist")
    files = sorted(f for f in os.listdir(folder) if any(e in f for e in (".pdb", ".ent", ".cif")))
    if not files:
        raise records.DataError(f"protein.pdb_dir={folder!r} has no .pdb/.ent/.cif files")
    return [structure.read_file(os.path.join(folder, f)) for f in files]


def read_pdb2021(root: str) -> dict[str, list[structure.Chain]]:
    """ProteinMPNN's pdb_2021aug02 layout -> {'train', 'validation'} chains (one per cluster)."""
    import csv

    from reed_jax.convert import torch_file

    listing = os.path.join(root, "list.csv")
    if not os.path.exists(listing):
        raise records.DataError(f"protein.pdb2021_dir={root!r} has no list.csv (expected ProteinMPNN's pdb_2021aug02)")
    held = {}
    for split, f in (("validation", "valid_clusters.txt"), ("test", "test_clusters.txt")):
        path = os.path.join(root, f)
        if os.path.exists(path):
            with open(path) as fh:
                held.update({c: split for c in fh.read().split()})
    out: dict[str, list[structure.Chain]] = {"train": [], "validation": []}
    seen = set()
    with open(listing) as fh:
        for row in csv.DictReader(fh):
            cluster = row["CLUSTER"]
            split = held.get(cluster, "train")
            if cluster in seen or split == "test":
                continue
            seen.add(cluster)
            cid = row["CHAINID"]
            path = os.path.join(root, "pdb", cid[1:3], f"{cid}.pt")
            if not os.path.exists(path):
                raise records.DataError(f"protein.pdb2021_dir: chain file {path} listed in list.csv is missing")
            e = torch_file.load(path)
            xyz, mask = np.asarray(e["xyz"], np.float32)[:, :4], np.asarray(e["mask"], bool)[:, :4]
            xyz = np.where(mask[..., None], xyz, np.nan).astype(np.float32)
            res = float(row["RESOLUTION"]) if row.get("RESOLUTION") not in (None, "") else math.nan
            out[split].append(structure.Chain(cid, residues.encode(e["seq"]), xyz, res))
    return out


def read_clusters(path: str) -> dict[str, int]:
    """Cluster file -> {member name: cluster number}."""
    out = {}
    with open(path) as fh:
        for c, line in enumerate(fh):
            for name in line.split():
                out[name] = c
    return out


def filter_chains(chains, p, log=print) -> list[structure.Chain]:
    keep, why = [], {"length": 0, "resolution": 0, "unknown residues": 0}
    for ch in chains:
        if not p.min_length <= len(ch) <= p.max_length:
            why["length"] += 1
        elif not (math.isnan(ch.resolution) or ch.resolution <= p.max_resolution):
            why["resolution"] += 1
        elif np.mean(ch.tokens == residues.X) > p.max_x_fraction:
            why["unknown residues"] += 1
        else:
            keep.append(ch)
    skipped = ", ".join(f"{v} by {k}" for k, v in why.items() if v)
    log(f"{len(keep)} of {len(chains)} chains kept" + (f" (skipped: {skipped})" if skipped else ""))
    return keep


def split_chains(chains, p, groups: dict[str, int] | None = None) -> dict[str, list[structure.Chain]]:
    """Hold out validation_fraction of the groups (clusters; each chain its own group by default)."""
    key = lambda ch: groups.get(ch.name, groups.get(ch.name.split(".")[0], ch.name)) if groups else ch.name
    names = sorted({str(key(ch)) for ch in chains})
    rng = np.random.default_rng(p.split_seed)
    n_val = max(1, int(round(p.validation_fraction * len(names)))) if len(names) > 1 else 0
    val = set(rng.permutation(names)[:n_val].tolist())
    return {"train": [ch for ch in chains if str(key(ch)) not in val],
            "validation": [ch for ch in chains if str(key(ch)) in val]}


def load_splits(p, log=print) -> dict[str, list[structure.Chain]]:
    if p.source == "pdb2021":
        splits = read_pdb2021(p.pdb2021_dir)
        return {k: filter_chains(v, p, log) for k, v in splits.items()}
    if p.source == "cath":
        chains = structure.read_cath_jsonl(os.path.join(p.cath_dir, "chain_set.jsonl"))
        splits = structure.read_cath_splits(os.path.join(p.cath_dir, "chain_set_splits.json"))
        by_name = {ch.name: ch for ch in filter_chains(chains, p, log)}
        return {s: [by_name[n] for n in splits[k] if n in by_name] for s, k in (("train", "train"),
                                                                            ("validation", "validation"))}
    chains = read_mdanalysistests(p.archive) if p.source == "mdanalysistests" else read_pdb_dir(p.pdb_dir)
    groups = read_clusters(p.cluster_file) if p.source == "pdb_dir" and p.cluster_file else None
    return split_chains(filter_chains(chains, p, log), p, groups)


def example(ch: structure.Chain, index: int, length: int) -> dict[str, np.ndarray]:
    """A chain padded to `length` (see the module docstring for the fields)."""
    n = len(ch)
    if n > length:
        raise records.DataError(f"chain {ch.name} has {n} residues > protein.max_length={length}")
    coords = np.zeros((length, 4, 3), np.float32)
    ok = ch.backbone_mask
    coords[:n][ok] = ch.coords[ok]
    mask = np.zeros(length, np.float32)
    mask[:n] = ok
    tokens = np.full(length, residues.X, np.int32)
    tokens[:n] = ch.tokens
    return {"coords": coords, "mask": mask, "tokens": tokens, "residue_idx": np.arange(length, dtype=np.int32),
            "length": np.int32(n), "index": np.int64(index)}


def import_external(name: str, target, ch: structure.Chain, length: int, edge_idx: np.ndarray | None):
    """targets.<name>.source/<chain>/embeddings.npz (AlphaFold3-style: arrays single, pair, structure) or
    <source>/<chain>.npz: array `name` (or the only one) [N, D], or a pair [N, N, D] gathered at the
    native kNN edges `edge_idx` [length, K]."""
    path = os.path.join(target.source, ch.name, "embeddings.npz")
    if not os.path.exists(path):
        path = os.path.join(target.source, f"{ch.name}.npz")
    if not os.path.exists(path):
        raise records.DataError(f"targets.{name}.source={target.source!r}: no embeddings for chain {ch.name} "
                                f"({ch.name}/embeddings.npz or {ch.name}.npz)")
    with np.load(path) as f:
        keys = [name] if name in f.files else f.files
        if len(keys) != 1:
            raise records.DataError(f"{path}: no array {name!r} among {f.files}")
        a = np.asarray(f[keys[0]], np.float32)
    n = len(ch)
    if a.shape[0] != n or a.shape[-1] != target.dim or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[1] != n):
        raise records.DataError(f"{path}: {keys[0]} has shape {a.shape}; chain {ch.name} has {n} residues and "
                                f"targets.{name}.dim={target.dim} (expected [{n}, {target.dim}] or [{n}, {n}, {target.dim}])")
    if a.ndim == 3:  # pair: gather at the native structure's kNN edges
        idx = np.minimum(edge_idx[:n], n - 1)
        out = np.zeros((length, idx.shape[1], target.dim), np.float32)
        out[:n] = np.take_along_axis(a, idx[..., None], axis=1)
        return out
    out = np.zeros((length, target.dim), np.float32)
    out[:n] = a
    return out
