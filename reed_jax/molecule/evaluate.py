"""Sampling and evaluation for the molecule track: `--mode=sample` (SDF) and periodic metrics.

Molecule sizes are drawn from the training split's atom-count histogram (seeded), molecules are
generated in fixed-size batches padded to molecule.max_atoms (one compile), and scored by
molecule.metrics; samples go to `<workdir>/samples/molecules_<step>.sdf`.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from reed_jax.data import records
from reed_jax.molecule import chem, metrics, model as molecule_model


def sizes(train_lengths, n: int, seed: int) -> np.ndarray:
    """n atom counts drawn from the training split's histogram (the manifest's `lengths['train']`)."""
    return np.random.default_rng(seed).choice(np.asarray(train_lengths), n)


def generate(sample_fn, params, counts: np.ndarray, max_atoms: int, batch_size: int, seed: int) -> dict:
    """{types, charges, bonds, coords, mask} numpy [S, ...] for molecules of `counts` atoms."""
    out = []
    for i in range(0, len(counts), batch_size):
        c = counts[i:i + batch_size]
        mask = np.zeros((batch_size, max_atoms), np.float32)
        for j, n in enumerate(c):
            mask[j, :n] = 1.0
        s = jax.device_get(sample_fn(params, jax.random.fold_in(jax.random.PRNGKey(seed), i), mask))
        out.append({**{k: np.asarray(v)[:len(c)] for k, v in s.items()}, "mask": mask[:len(c)]})
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def make_evaluator(config, workdir: str, data_dir: str, model, log=print):
    """(params, step) -> (metrics dict, None): sample, score, write the SDF."""
    m = config.molecule
    sample_fn = molecule_model.make_sampler(config, model)
    _, manifest = records.read_manifest(data_dir)
    train_smiles = [s for s in manifest.get("smiles", {}).get("train", []) if s]
    counts = sizes(manifest["lengths"]["train"], m.eval_samples, config.seed + 1)
    names = molecule_model.elements(m)

    def fn(params, step):
        samples = generate(sample_fn, params, counts, m.max_atoms, config.sample.batch_size, config.seed + 2)
        result, mols = metrics.evaluate(samples, names, train_smiles, m.energy_samples)
        path = os.path.join(workdir, "samples", f"molecules_{step:07d}.sdf")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            chem.write_sdf(mols, path)
        return {"step": step, **result, "samples": path}, None

    return fn


def evaluate(config, workdir: str, model, params, step: int, mesh, log=print) -> dict:
    """`--mode=evaluate`: `params` -> molecule.eval_samples molecules, scored, and their SDF."""
    from reed_jax.data import precompute

    result, _ = make_evaluator(config, workdir, precompute.data_dir(config, workdir), model, log)(params, step)
    return result


def sample(config, workdir: str, model, params, step: int, mesh, log=print) -> str:
    """`--mode=sample`: `evaluate`'s molecules; returns the path of the SDF it wrote."""
    return evaluate(config, workdir, model, params, step, mesh, log)["samples"]
