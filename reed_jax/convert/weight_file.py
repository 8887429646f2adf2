"""Local weight files -> flat `{name: np.ndarray}` state dicts, whatever the format.

`.safetensors` (read directly), `.npz`, and torch `.pth`/`.pt`/`.bin` files (read without torch,
see `torch_file`). Nothing is downloaded: an empty or missing path is an error naming the config key.
"""
from __future__ import annotations

import os

import numpy as np

from reed_jax.convert import safetensors_file, torch_file


class WeightsError(ValueError):
    """A weight file that is not there or cannot be read; the message names the config key."""


def load(path: str, key: str) -> dict[str, np.ndarray]:
    """The state dict at `path`; `key` is the config key that named it (for the error message)."""
    if not path:
        raise WeightsError(f"{key} is empty: point it at the local weight file (nothing is downloaded)")
    if not os.path.exists(path):
        raise WeightsError(f"{key}={path!r} does not exist")
    if path.endswith(".safetensors"):
        return safetensors_file.load(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    return torch_file.load_state_dict(path)
