"""The non-image tracks, each plugged into the shared trainer by one module (`reed_jax.<track>.track`).

A track module provides what the trainer needs beyond the image defaults:

    build_model(config) -> flax module
    init_params(config, model, rng) -> params
    signature(config) -> dict          what a checkpoint must match
    losses(config, model, params, batch, rng) -> (gen [B], {name: align [B]}, noise level [B])
        the noise level is objective.combine's convention for every track: in [0, 1], 1 = pure noise
        (images: t; proteins: 1 - t, the masked fraction, since the protein track's t is the clean
        fraction; molecules: 1 - t, SemlaFlow's t = 1 being data). combine feeds it to the
        alignment's noise weights a(t) (e.g. 'linear' = 1 - noise level).
    check_data(config, schema, data_dir)
    train_iterator(config, data_dir, batch_size, shard_index, shard_count, log) -> iterator with
        get_state()/set_state()
    make_evaluator(config, workdir, data_dir, model, log) -> (params, step) -> (metrics, None)
    precompute(config, out_dir, log) -> shard dir
    sample_mode(config, workdir, log) -> output path
    evaluate_mode(config, workdir, log) -> metrics

`get(config)` returns the module of `config.track`, or None for the image track (train.py's own code).
"""
from __future__ import annotations

import importlib

MODULES = {"protein": "reed_jax.protein.track", "molecule": "reed_jax.molecule.track"}


def get(config):
    name = MODULES.get(config.track)
    return importlib.import_module(name) if name else None
