"""`--mode=precompute`: the track's sources -> frozen encoders -> ArrayRecord shards.

Existing shards are never overwritten: identical ones are kept, different ones stop the run with
a message (each track's precompute; records.matching_shards).
"""
from __future__ import annotations

import os


def data_dir(config, workdir: str) -> str:
    """The shard directory: data.dir, else <workdir>/data."""
    return config.data.dir or os.path.join(workdir, "data")


def precompute(config, workdir: str, log=print) -> str:
    """Write the shards of `config` (and cache the frozen networks); returns the shard directory."""
    from reed_jax import tracks

    return tracks.get(config).precompute(config, data_dir(config, workdir), log)
