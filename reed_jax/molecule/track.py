"""The molecule track's hooks for the shared trainer (see reed_jax/tracks.py)."""
from __future__ import annotations

from reed_jax.data import pipeline
from reed_jax.molecule import model as molecule_model
from reed_jax.molecule.model import build_model, check_data, init_params, losses  # noqa: F401 (hooks)
from reed_jax.molecule.evaluate import evaluate_mode, make_evaluator, sample_mode  # noqa: F401 (hooks)


def signature(config) -> dict:
    m, mo = config.model, config.molecule
    sig = {"track": "molecule", "model": [m.hidden, mo.edge_dim, mo.layers, m.projector_width,
                                          bool(mo.self_condition)],
           "max_atoms": mo.max_atoms, "elements": mo.elements,
           "targets": {n: [t.tap, t.dim, t.proj_width] for n, t in config.targets.items()}}
    # the network's inputs: t, coordinates, atom types, bonds (checkpoints from before issue 16 also fed noisy
    # charges, and their self-conditioning fed charge probabilities and x1hat = x for "no prediction")
    sig["inputs"] = ["t", "coords", "types", "bonds"]
    if mo.backbone != "egnn":
        sig.update(backbone=mo.backbone, widths=[mo.coord_sets, mo.heads, mo.message_dim, mo.message_hidden,
                                                 mo.size_emb])
    return sig


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


def precompute(config, out_dir: str, log=print) -> str:
    from reed_jax.molecule import precompute as molecule_precompute
    return molecule_precompute.precompute_molecules(config, out_dir, log)
