"""Frozen target encoders: a registry name -> how to get (and cache) the encoder.

A registered encoder turns clean samples into named target features; shard fields are
`target/<encoder>_<output>` (e.g. `target/digits_tokens`). Trained-here encoders (the digits
one) are fitted once and cached with orbax under `<data dir>/encoders/<name>`.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import orbax.checkpoint as ocp


def load_or_fit(path: str, fit_fn: Callable[[], dict], log=print) -> dict:
    """Params cached at `path` (orbax), or `fit_fn()` once and saved there."""
    path = os.path.abspath(path)
    ckptr = ocp.StandardCheckpointer()
    if os.path.isdir(path):
        log(f"loading cached encoder {path}")
        return ckptr.restore(path)
    params = fit_fn()
    ckptr.save(path, params)
    ckptr.wait_until_finished()
    return params


def digits_targets(params, images: np.ndarray) -> dict[str, np.ndarray]:
    """The digits encoder's targets: {'digits_tokens': [N, 16, 64], 'digits_pooled': [N, 128]}."""
    from reed_jax.models.encoders import classifier
    from reed_jax.models.encoders.digits import DigitsEncoder

    out = classifier.predict(DigitsEncoder(), params, images)
    return {"digits_tokens": out["tokens"], "digits_pooled": out["pooled"]}
