"""The molecule track's hooks for the shared trainer (see reed_jax/tracks.py)."""
from __future__ import annotations

from reed_jax.data import pipeline
from reed_jax.molecule import evaluate as molecule_eval, model as molecule_model
from reed_jax.molecule.model import build_model, check_data, init_params, losses  # noqa: F401 (hooks)
from reed_jax.molecule.evaluate import sample_mode  # noqa: F401 (hooks)


def signature(config) -> dict:
    m, mo = config.model, config.molecule
    return {"track": "molecule", "model": [m.hidden, mo.edge_dim, mo.layers, m.projector_width,
                                           bool(mo.self_condition)],
            "max_atoms": mo.max_atoms, "elements": mo.elements,
            "targets": {n: [t.tap, t.dim, t.proj_width] for n, t in config.targets.items()}}


def train_iterator(config, data_dir: str, batch_size: int, shard_index: int, shard_count: int, log=print):
    """grain over the shards (or size-bucketed batches when molecule.size_buckets is set), each batch
    with its OT-paired prior draw (molecule.model.WithPrior)."""
    if config.molecule.size_buckets:
        from reed_jax.data import buckets
        crop = {"types": 1, "charges": 1, "coords": 1, "mask": 1, "bonds": 2}
        inner = buckets.make_loader(data_dir, "train", batch_size, config.molecule.size_buckets, crop,
                                    seed=config.seed, shard_index=shard_index, shard_count=shard_count, log=log)
    else:
        inner = iter(pipeline.make_loader(data_dir, "train", batch_size, seed=config.seed, shard_index=shard_index,
                                          shard_count=shard_count))
    return molecule_model.WithPrior(inner, config, shard_index)


def make_evaluator(config, workdir: str, data_dir: str, model, log=print):
    return molecule_eval.make_evaluator(config, workdir, data_dir, model, log)


def precompute(config, out_dir: str, log=print) -> str:
    from reed_jax.molecule import precompute as molecule_precompute
    return molecule_precompute.precompute_molecules(config, out_dir, log)


def evaluate_mode(config, workdir: str, log=print) -> dict:
    """`--mode=evaluate`: the sample metrics of the latest EMA params (molecule.eval_samples molecules)."""
    import json
    import os

    from reed_jax import train
    from reed_jax.data import precompute as precompute_lib

    model, params, step = train.latest_ema(config, workdir)
    result, _ = make_evaluator(config, workdir, precompute_lib.data_dir(config, workdir), model, log)(params, step)
    with open(os.path.join(workdir, f"eval_{step:07d}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result
