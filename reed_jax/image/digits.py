"""The embedded default data: scikit-learn's digits (1,797 real 8x8 images, 10 classes, offline)."""
from __future__ import annotations

import os

import numpy as np

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def load() -> tuple[np.ndarray, np.ndarray]:
    """-> (images [1797, 8, 8, 1] float32 in [-1, 1], labels [1797] int32)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[..., None]
    return images, d.target.astype(np.int32)


def _fitted(module, name: str, what: str, steps: int, seed: int, data_dir: str, log) -> dict:
    """A digits classifier fitted once and cached under `<data dir>/encoders/<name>`."""
    from reed_jax.models import encoders
    from reed_jax.models.encoders import classifier

    def fit():
        images, labels = load()
        log(f"fitting the {what} ({steps} steps)")
        params, acc = classifier.fit(module, images, labels, seed=seed, steps=steps)
        log(f"{what} train accuracy {acc:.4f}")
        return params

    return encoders.load_or_fit(os.path.join(data_dir, "encoders", name), fit, log)


def fd_params(config, data_dir: str, log=print) -> dict:
    """The digits FD network (different architecture and seed from the target encoder)."""
    from reed_jax.models.encoders.digits import DigitsFDNet

    p = config.precompute
    return _fitted(DigitsFDNet(), "digits_fd", "digits FD network", p.fd_steps, p.fd_seed, data_dir, log)


def encoder_params(config, data_dir: str, log=print) -> dict:
    """The digits target encoder."""
    from reed_jax.models.encoders.digits import DigitsEncoder

    p = config.precompute
    return _fitted(DigitsEncoder(), "digits_encoder", "digits target encoder", p.encoder_steps, p.encoder_seed,
                   data_dir, log)


def examples(config, data_dir: str, log=print) -> list[dict]:
    """Every digit as a record: image [8, 8, 1], label, index and the digits encoder's targets."""
    from reed_jax.data import records
    from reed_jax.models import encoders

    images, labels = load()
    feats = encoders.digits_targets(encoder_params(config, data_dir, log), images)
    return [{"image": images[i], "label": labels[i], "index": np.int64(i),
             **{records.TARGET_PREFIX + k: v[i] for k, v in feats.items()}} for i in range(len(images))]


def precompute(config, out_dir: str, log=print) -> str:
    """Fit (once, cached) the target encoder and the FD network, compute every target's features,
    and write `image`, `label`, `index`, `target/*` records to `out_dir`; identical shards already
    there are kept, different ones stop the run with a message."""
    from reed_jax.data import records

    fd_params(config, out_dir, log)
    rows = examples(config, out_dir, log)
    schema = records.Schema.of(rows[0])
    if records.matching_shards(out_dir, schema, {"train": len(rows)}):
        log(f"shards already in {out_dir} ({len(rows)} records); keeping them")
        return out_dir
    written = records.write_split(out_dir, "train", schema, rows, config.data.num_shards)
    records.write_manifest(out_dir, schema, written, {"source": "digits"})
    log(f"wrote {len(rows)} records in {len(written)} shards to {out_dir} ({schema.record_bytes} bytes/record)")
    return out_dir
