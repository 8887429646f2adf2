"""The molecule track's hooks for the shared trainer (see reed_jax/tracks.py): unconditional 3D
molecule generation by flow matching (EGNN or Semla), a pooled target from a frozen 3D encoder."""
from __future__ import annotations

from reed_jax import tracks
from reed_jax.data import pipeline
from reed_jax.molecule import model as molecule_model
from reed_jax.molecule.config import SOURCES, extend_schema, validate  # noqa: F401 (hooks)
from reed_jax.molecule.evaluate import evaluate, make_evaluator, sample  # noqa: F401 (hooks)
from reed_jax.molecule.model import build_model, check_data, init_params, losses  # noqa: F401 (hooks)

NAME = "molecule"


def preflight(config, mode: str) -> None:
    """Nothing beyond the shards (checked by check_data)."""


def logical_specs(model):
    return None  # no logical names: the size-based FSDP tactic (parallel.state_shardings)


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


def frozen_encoders(config) -> dict:
    return {}  # the 3D encoder's features are precomputed


def evaluations(config, workdir: str, data_dir: str, model, mesh, log=print) -> list:
    """molecule.eval_samples generated molecules scored (stability, validity, uniqueness, novelty,
    energies) and written as SDF every train.eval_every steps."""
    return [tracks.Evaluation("eval", config.train.eval_every, make_evaluator(config, workdir, data_dir, model, log))]


def precompute(config, out_dir: str, log=print) -> str:
    from reed_jax.molecule import precompute as molecule_precompute
    return molecule_precompute.precompute_molecules(config, out_dir, log)
