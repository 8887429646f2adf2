"""The protein track's hooks for the shared trainer (see reed_jax/tracks.py): inverse folding by
masked discrete diffusion on a ProteinMPNN-style backbone, targets from the frozen ProteinMPNN."""
from __future__ import annotations

from reed_jax import tracks
from reed_jax.data import pipeline
from reed_jax.protein import evaluate as protein_eval, model as protein_model
from reed_jax.protein.config import SOURCES, extend_schema, validate  # noqa: F401 (hooks)
from reed_jax.protein.evaluate import evaluate, sample  # noqa: F401 (hooks)
from reed_jax.protein.model import build_model, check_data, init_params, losses  # noqa: F401 (hooks)

NAME = "protein"


def preflight(config, mode: str) -> None:
    """Nothing beyond the shards (checked by check_data) and the teacher (read at precompute)."""


def logical_specs(model):
    return None  # no logical names: the size-based FSDP tactic (parallel.state_shardings)


def signature(config) -> dict:
    m, p = config.model, config.protein
    return {"track": "protein", "model": [m.hidden, p.enc_layers, p.dec_layers, p.k, m.projector_width],
            "max_length": p.max_length,
            # REED's head and decoder (2026-12: 22 classes, decoder edge MLPs, learned initial nodes, torch init)
            "head": p.num_classes, "update_edge": bool(p.update_edge), "learnable_node": bool(p.learnable_node),
            "targets": {n: [t.tap, t.dim, t.proj_width] for n, t in config.targets.items()}}


def train_iterator(config, data_dir: str, batch_size: int, shard_index: int, shard_count: int, log=print):
    """grain over the shards, or length-bucketed batches when protein.length_buckets is set."""
    if config.protein.length_buckets:
        from reed_jax.data import buckets
        return buckets.make_loader(data_dir, "train", batch_size, config.protein.length_buckets,
                                   protein_model.crop_fields(config), seed=config.seed, shard_index=shard_index,
                                   shard_count=shard_count, log=log)
    return iter(pipeline.make_loader(data_dir, "train", batch_size, seed=config.seed, shard_index=shard_index,
                                     shard_count=shard_count))


def frozen_encoders(config) -> dict:
    return {}  # the teacher's features are precomputed


def evaluations(config, workdir: str, data_dir: str, model, mesh, log=print) -> list:
    """Masked-token loss and accuracy, then sequence recovery and diversity of sampled designs, on the
    held-out backbones every train.eval_every steps."""
    batches = protein_model.eval_batches(data_dir, "validation", config.sample.batch_size)
    return [tracks.Evaluation("eval", config.train.eval_every, protein_eval.make_evaluator(config, model, batches))]


def precompute(config, out_dir: str, log=print) -> str:
    from reed_jax.protein import precompute as protein_precompute
    return protein_precompute.precompute_proteins(config, out_dir, log)
