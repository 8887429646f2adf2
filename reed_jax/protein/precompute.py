"""`--mode=precompute` for the protein track: chains -> padded examples + targets -> shards.

    python main.py --config=configs/protein_demo.py --workdir=/tmp/protein --mode=precompute

Splits `train` and `validation` go into the same shard directory (see protein.data). Targets of
encoder 'proteinmpnn' come from the frozen teacher (protein.teacher) run once per chain on the
native sequence and structure; 'external' ones are imported per chain. Existing shards are kept when
identical (schema and counts) and never overwritten otherwise.
"""
from __future__ import annotations

import jax
import numpy as np

from reed_jax.data import buckets, records
from reed_jax.models import encoders
from reed_jax.protein import data, features, model as protein_model, teacher

TEACHER_BATCH = 8  # chains per teacher call (the last batch padded: one compile)
PAIR_K = 48  # edges stored for imported pair targets (ProteinMPNN's released k; the student's k=30 is a subset)


def add_targets(config, splits: dict, log=print) -> None:
    """Fill `target/<name>` (and `_idx`) into every example of every split, in place."""
    from tqdm import tqdm

    p, t_cfg = config.protein, config.targets
    names = [n for n, t in t_cfg.items() if t.encoder == encoders.PROTEIN_TEACHER]
    bad = [n for n in names if n not in teacher.OUTPUTS]
    if bad:
        raise records.DataError(f"targets {bad}: a 'proteinmpnn' target is named after the teacher output it takes, "
                                f"one of {teacher.OUTPUTS}")
    fn = None
    if names:
        model, params = teacher.load(p.teacher_path, p.teacher_model)
        fn = teacher.make_fn(model, params)
        for n in names:
            if t_cfg[n].dim != model.hidden:
                raise records.DataError(f"targets.{n}.dim={t_cfg[n].dim} but the teacher's features are {model.hidden}-d")
        log(f"teacher ProteinMPNN ({p.teacher_model}, k={model.k}) from {p.teacher_path}")
    imported = {n: t for n, t in t_cfg.items() if t.encoder == encoders.EXTERNAL}
    knn = jax.jit(lambda c, m: features.knn(c[:, :, 1], m, PAIR_K)) if imported else None
    total = sum(len(v) for v, _ in splits.values())
    bar = tqdm(total=total, desc="targets", unit="chain", dynamic_ncols=True)
    for examples, chains in splits.values():
        if not examples:
            continue
        stacked = {k: np.stack([e[k] for e in examples]) for k in protein_model.BATCH_FIELDS}
        for bi, b in enumerate(protein_model.pad_batches(stacked, TEACHER_BATCH)):
            i = bi * TEACHER_BATCH
            count = min(TEACHER_BATCH, len(examples) - i)
            out = jax.device_get(fn(b["coords"], b["mask"], b["residue_idx"], b["tokens"])) if fn else {}
            e_idx = np.asarray(knn(b["coords"], b["mask"])) if knn else None
            for j in range(count):
                ex, ch = examples[i + j], chains[i + j]
                for n in names:
                    ex[records.TARGET_PREFIX + n] = np.asarray(out[n][j]).astype(records.np_dtype(t_cfg[n].dtype))
                    if n == "pair":
                        ex[records.TARGET_PREFIX + n + "_idx"] = np.asarray(out["pair_idx"][j], np.int32)
                for n, t in imported.items():
                    ex[records.TARGET_PREFIX + n] = data.import_external(n, t, ch, p.max_length, e_idx[j]).astype(
                        records.np_dtype(t.dtype))
                    if ex[records.TARGET_PREFIX + n].ndim == 3:
                        ex[records.TARGET_PREFIX + n + "_idx"] = e_idx[j]
                bar.update(1)
    bar.close()


def precompute_proteins(config, out_dir: str, log=print) -> str:
    p = config.protein
    splits = data.load_splits(p, log)
    if not splits["train"]:
        raise records.DataError("no training chains left after filtering (see the counts above)")
    with_examples = {}
    offset = 0
    for s, chains in splits.items():
        with_examples[s] = ([data.example(ch, offset + i, p.max_length) for i, ch in enumerate(chains)], chains)
        offset += len(chains)
    add_targets(config, with_examples, log)
    schema = records.Schema.of(with_examples["train"][0][0])
    counts = {s: len(v[0]) for s, v in with_examples.items()}
    if records.matching_shards(out_dir, schema, counts):
        log(f"shards already in {out_dir} ({counts}); keeping them")
        return out_dir
    rows = []
    for s, (examples, _) in with_examples.items():
        if examples:
            rows += records.write_split(out_dir, s, schema, examples, min(config.data.num_shards, len(examples)))
    records.write_manifest(out_dir, schema, rows, {
        "source": p.source, "chains": {s: [ch.name for ch in v[1]] for s, v in with_examples.items()},
        "lengths": {s: buckets.lengths_of(np.stack([e["mask"] for e in v[0]])).tolist()
                    for s, v in with_examples.items() if v[0]}})
    log(f"wrote {counts} chains to {out_dir} ({schema.record_bytes / 1024:.1f} KiB per chain: "
        f"{', '.join(f'{f.name} {f.shape}' for f in schema.fields)})")
    return out_dir
