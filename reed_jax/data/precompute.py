"""Sources -> frozen encoders -> ArrayRecord shards (`--mode=precompute`).

The digits default: fit (once, cached) the target encoder and the FD network, compute every
target's features, and write `image`, `label`, `index`, `target/*` records. Existing shards are
never overwritten: identical ones are kept, different ones stop the run with a message.
"""
from __future__ import annotations

import os

import numpy as np

from reed_jax.image import digits
from reed_jax.data import records
from reed_jax.models import encoders
from reed_jax.models.encoders import classifier
from reed_jax.models.encoders.digits import DigitsEncoder, DigitsFDNet


def data_dir(config, workdir: str) -> str:
    return config.data.dir or os.path.join(workdir, "data")


def _fitted(module, name: str, what: str, steps: int, seed: int, data_dir_: str, log) -> dict:
    """A digits classifier fitted once and cached under `<data dir>/encoders/<name>`."""
    def fit():
        images, labels = digits.load()
        log(f"fitting the {what} ({steps} steps)")
        params, acc = classifier.fit(module, images, labels, seed=seed, steps=steps)
        log(f"{what} train accuracy {acc:.4f}")
        return params

    return encoders.load_or_fit(os.path.join(data_dir_, "encoders", name), fit, log)


def fd_params(config, data_dir_: str, log=print) -> dict:
    """The digits FD network (different architecture and seed from the target encoder)."""
    p = config.precompute
    return _fitted(DigitsFDNet(), "digits_fd", "digits FD network", p.fd_steps, p.fd_seed, data_dir_, log)


def encoder_params(config, data_dir_: str, log=print) -> dict:
    """The digits target encoder."""
    p = config.precompute
    return _fitted(DigitsEncoder(), "digits_encoder", "digits target encoder", p.encoder_steps, p.encoder_seed,
                   data_dir_, log)


def digits_examples(config, data_dir_: str, log=print) -> list[dict]:
    images, labels = digits.load()
    feats = encoders.digits_targets(encoder_params(config, data_dir_, log), images)
    return [{"image": images[i], "label": labels[i], "index": np.int64(i),
             **{records.TARGET_PREFIX + k: v[i] for k, v in feats.items()}} for i in range(len(images))]


def precompute(config, workdir: str, log=print) -> str:
    """Write the shards of `config.data` (and cache the frozen networks); returns the shard directory."""
    out = data_dir(config, workdir)
    from reed_jax import tracks
    if (track := tracks.get(config)) is not None:
        return track.precompute(config, out, log)
    if config.data.source == "imagenet":
        from reed_jax.image import precompute as precompute_images
        return precompute_images.precompute_images(config, out, log)
    fd_params(config, out, log)
    examples = digits_examples(config, out, log)
    schema = records.Schema.of(examples[0])
    if records.matching_shards(out, schema, {"train": len(examples)}):
        log(f"shards already in {out} ({len(examples)} records); keeping them")
        return out
    rows = records.write_split(out, "train", schema, examples, config.data.num_shards)
    records.write_manifest(out, schema, rows, {"source": "digits"})
    log(f"wrote {len(examples)} records in {len(rows)} shards to {out} ({schema.record_bytes} bytes/record)")
    return out
