"""`--mode=precompute` for the molecule track: molecules -> padded arrays + global targets -> shards.

    python main.py --config=configs/molecule_demo.py --workdir=/tmp/mol --mode=precompute

Splits `train` and `validation` go into one shard directory. Coordinates are stored in Angstrom
with the centre of mass of the atoms removed. Targets with encoder 'qm9_property' come from the
stand-in encoder (molecule.encoder, fitted once on the training split and cached); with encoder
'ani1x' from the pretrained ANI-1x potential (molecule.encoder.ani_pooled: one member's hidden layer
`molecule.ani_layer`, averaged over atoms (`molecule.ani_pool`: 'mean' over all, or 'element': one
mean per element H/C/N/O, concatenated), standardised per channel with the training split's
statistics when `molecule.ani_standardize`), after dropping every molecule with an element ANI-1x
does not cover (QM9: fluorine; the count per split is logged); 'external' ones
are imported per molecule from `targets.<name>.source`: a folder of `<molecule id>.npy` [D], or an
`.npz` with `ids` [M] and `vectors` [M, D]. The manifest keeps each split's atom counts (the
sampler draws molecule sizes from the training histogram) and canonical SMILES (novelty).
"""
from __future__ import annotations

import os

import numpy as np

from reed_jax.data import buckets, records
from reed_jax.models import encoders
from reed_jax.molecule import chem, data, encoder as encoder_lib, model as molecule_model

STANDIN = encoders.MOLECULE_STANDIN
ANI = encoder_lib.ANI_ENCODER


def load_splits(config, log=print) -> dict[str, list[data.Molecule]]:
    m = config.molecule
    limits = {"train": m.train_limit, "validation": m.eval_limit}
    if m.source == "qm9":
        return data.read_qm9(m.qm9_wheel, m.split_seed, limits, log)
    if m.source == "edm_arrays":
        if not os.path.exists(m.edm_path):
            raise records.DataError(f"molecule.edm_path={m.edm_path!r} does not exist")
        mols = data.read_edm_arrays(m.edm_path)
    else:
        if not os.path.exists(m.sdf_path):
            raise records.DataError(f"molecule.sdf_path={m.sdf_path!r} does not exist")
        mols = data.read_sdf_dir(m.sdf_path)
    perm = np.random.default_rng(m.split_seed).permutation(len(mols))
    n_va = max(1, round(m.validation_fraction * len(mols)))
    out = {"validation": [mols[i] for i in perm[:n_va]], "train": [mols[i] for i in perm[n_va:]]}
    for s, lim in limits.items():
        out[s] = out[s][:lim] if lim else out[s]
    log(f"{m.source}: {len(out['train'])} train, {len(out['validation'])} validation molecules")
    return out


def arrays_of(mols: list[data.Molecule], element_names, max_atoms: int) -> dict[str, np.ndarray]:
    """Stacked padded arrays, coordinates centred; names the molecule that does not fit."""
    rows = []
    for mol in mols:
        try:
            a = chem.to_arrays(mol.mol, element_names, max_atoms)
        except ValueError as e:
            raise records.DataError(f"molecule {mol.name}: {e} (molecule.max_atoms / molecule.elements)") from None
        n = int(a["mask"].sum())
        a["coords"][:n] -= a["coords"][:n].mean(0)
        rows.append(a)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def import_external(name: str, target, mols: list[data.Molecule]) -> np.ndarray:
    """[M, dim] vectors for `mols` from targets.<name>.source (see module docstring)."""
    src = target.source
    if src.endswith(".npz"):
        if not os.path.exists(src):
            raise records.DataError(f"targets.{name}.source={src!r} does not exist")
        with np.load(src) as f:
            if "ids" not in f.files or "vectors" not in f.files:
                raise records.DataError(f"{src}: needs arrays 'ids' and 'vectors'; has {f.files}")
            table = dict(zip([str(i) for i in f["ids"]], np.asarray(f["vectors"], np.float32)))
        missing = [m.name for m in mols if m.name not in table]
        if missing:
            raise records.DataError(f"{src}: no vector for {len(missing)} molecules, e.g. {missing[:3]}")
        out = np.stack([table[m.name] for m in mols])
    else:
        vecs = []
        for m in mols:
            p = os.path.join(src, f"{m.name}.npy")
            if not os.path.exists(p):
                raise records.DataError(f"targets.{name}.source={src!r}: no {m.name}.npy")
            vecs.append(np.asarray(np.load(p), np.float32))
        out = np.stack(vecs)
    if out.ndim != 2 or out.shape[1] != target.dim:
        raise records.DataError(f"targets.{name}: imported vectors have shape {out.shape[1:]}, targets.{name}.dim="
                                f"{target.dim}")
    return out


def standin_encoder(config, splits_arrays: dict, splits: dict, out_dir: str, log=print):
    """(module, params) of the cached property encoder, fitted on the training split when absent."""
    m = config.molecule
    dims = {t.dim for t in config.targets.values() if t.encoder == STANDIN}
    if len(dims) != 1:
        raise records.DataError(f"targets with encoder '{STANDIN}' must share one dim; got {sorted(dims)}")
    module = encoder_lib.PropertyEncoder(len(molecule_model.elements(m)), dim=dims.pop(), hidden=m.encoder_hidden,
                                         layers=m.encoder_layers)
    props = np.stack([x.props for x in splits["train"]]) if splits["train"][0].props is not None else None
    if props is None:
        raise records.DataError(f"encoder '{STANDIN}' trains on QM9 properties; molecule.source={m.source!r} has none")

    def fit():
        log(f"fitting the QM9 property encoder ({m.encoder_steps} steps on {len(props)} molecules)")
        params, mean, std = encoder_lib.fit(module, splits_arrays["train"], props, seed=m.encoder_seed,
                                            steps=m.encoder_steps, batch_size=m.encoder_batch)
        va = splits["validation"]
        if va:
            pred = encoder_lib.apply(module, params, splits_arrays["validation"])["props"] * std + mean
            truth = np.stack([x.props for x in va])
            mae, base = np.abs(pred - truth).mean(0), np.abs(mean - truth).mean(0)
            log("property encoder validation MAE (predicting the training mean): " + ", ".join(
                f"{k} {v:.4g} ({b:.4g})" for k, v, b in zip(data.QM9_PROPERTIES, mae, base)))
        return params

    name = (f"{STANDIN}_d{module.dim}_w{module.hidden}x{module.layers}_s{m.encoder_steps}_b{m.encoder_batch}"
            f"_n{len(props)}_seed{m.encoder_seed}")
    return module, encoders.load_or_fit(os.path.join(out_dir, "encoders", name), fit, log)


def drop_unsupported(splits: dict, log=print) -> dict:
    """Splits without the molecules holding an element outside ANI-1x's H, C, N, O (counts logged)."""
    from reed_jax.molecule import ani

    out = {}
    for s, mols in splits.items():
        els = [[a.GetSymbol() for a in x.mol.GetAtoms()] for x in mols]
        bad = ani.unsupported(els)
        found = ", ".join(sorted({e for row, b in zip(els, bad) if b for e in row if e not in ani.SPECIES}))
        log(f"{ANI}: dropped {int(bad.sum())} of {len(mols)} {s} molecules with elements outside "
            f"{'/'.join(ani.SPECIES)}" + (f" ({found})" if found else ""))
        out[s] = [x for x, b in zip(mols, bad) if not b]
    return out


def ani_targets(config, arrays: dict, log=print) -> dict[str, np.ndarray]:
    """{split: [M, W]} pooled ANI-1x features (standardised with the training split's statistics)."""
    m = config.molecule
    names = molecule_model.elements(m)
    raw = {s: encoder_lib.ani_pooled(m.ani_wheel, a, names, layer=m.ani_layer, member=m.ani_member,
                                     pool=m.ani_pool) for s, a in arrays.items()}
    mean, std = raw["train"].mean(0), raw["train"].std(0)
    dims = {t.dim for t in config.targets.values() if t.encoder == ANI}
    if dims != {raw["train"].shape[1]}:
        raise records.DataError(f"targets with encoder '{ANI}' have dim {sorted(dims)}, but ANI-1x layer "
                                f"molecule.ani_layer={m.ani_layer}, ani_pool={m.ani_pool!r} gives {raw['train'].shape[1]} "
                                f"features")

    def mean_cos(x):
        x = x[:512] / np.maximum(np.linalg.norm(x[:512], axis=1, keepdims=True), 1e-12)
        c = x @ x.T
        return float((c.sum() - np.trace(c)) / max(len(x) * (len(x) - 1), 1))

    std_out = {s: (v - mean) / np.maximum(std, 1e-6) for s, v in raw.items()}
    log(f"{ANI} targets: layer {m.ani_layer} of member {m.ani_member}, pooled {m.ani_pool!r}, "
        f"{raw['train'].shape[1]} features; mean "
        f"pairwise cosine between training targets {mean_cos(raw['train']):.3f} raw, "
        f"{mean_cos(std_out['train']):.3f} standardised ({'stored' if m.ani_standardize else 'not used'})")
    return std_out if m.ani_standardize else raw


def precompute_molecules(config, out_dir: str, log=print) -> str:
    m = config.molecule
    names = molecule_model.elements(m)
    splits = {s: v for s, v in load_splits(config, log).items()}
    if any(t.encoder == ANI for t in config.targets.values()):
        splits = drop_unsupported(splits, log)
    if not splits["train"]:
        raise records.DataError("no training molecules")
    arrays = {s: arrays_of(v, names, m.max_atoms) for s, v in splits.items() if v}
    targets = {s: {} for s in arrays}
    if any(t.encoder == STANDIN for t in config.targets.values()):
        module, params = standin_encoder(config, arrays, splits, out_dir, log)
        for s in arrays:
            emb = encoder_lib.apply(module, params, arrays[s])["embed"]
            for n, t in config.targets.items():
                if t.encoder == STANDIN:
                    targets[s][n] = emb
    if any(t.encoder == ANI for t in config.targets.values()):
        feats = ani_targets(config, arrays, log)
        for s in arrays:
            for n, t in config.targets.items():
                if t.encoder == ANI:
                    targets[s][n] = feats[s]
    for n, t in config.targets.items():
        if t.encoder == encoders.EXTERNAL:
            for s in arrays:
                targets[s][n] = import_external(n, t, splits[s])
    offset, examples = 0, {}
    for s, a in arrays.items():
        examples[s] = [{**{k: a[k][i] for k in molecule_model.FIELDS}, "num_atoms": np.int32(a["mask"][i].sum()),
                        "index": np.int64(offset + i),
                        **{records.TARGET_PREFIX + n: targets[s][n][i].astype(records.np_dtype(config.targets[n].dtype))
                           for n in sorted(targets[s])}} for i in range(len(a["mask"]))]
        offset += len(a["mask"])
    schema = records.Schema.of(examples["train"][0])
    counts = {s: len(v) for s, v in examples.items()}
    if records.matching_shards(out_dir, schema, counts):
        log(f"shards already in {out_dir} ({counts}); keeping them")
        return out_dir
    rows = []
    for s, ex in examples.items():
        rows += records.write_split(out_dir, s, schema, ex, min(config.data.num_shards, len(ex)))
    records.write_manifest(out_dir, schema, rows, {
        "source": m.source, "molecules": {s: [x.name for x in v] for s, v in splits.items()},
        "lengths": {s: buckets.lengths_of(a["mask"]).tolist() for s, a in arrays.items()},
        "smiles": {s: [chem.canonical_smiles(x.mol, isomeric=False) for x in v] for s, v in splits.items()}})
    log(f"wrote {counts} molecules to {out_dir} ({schema.record_bytes / 1024:.1f} KiB per molecule: "
        f"{', '.join(f'{f.name} {f.shape}' for f in schema.fields)})")
    return out_dir
