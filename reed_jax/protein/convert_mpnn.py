"""ProteinMPNN weights -> `reed_jax.protein.mpnn.MPNN` params.

Two namings, flat `{name: array}` dicts:
- colabdesign's haiku pickles (`colabdesign/mpnn/weights/v_48_020.pkl`, read with
  `convert.joblib_file` and flattened by `flatten_colabdesign`): `protein_mpnn/~/enc_layer_1/~/enc1_W11/w`,
  Linear `w` [in, out] as Flax;
- the PyTorch ProteinMPNN checkpoints (`v_48_020.pt`, `model_state_dict`): `encoder_layers.1.W11.weight`,
  Linear `weight` [out, in] (transposed here).
Every array must be used and every parameter found; shapes are checked by the caller against the
model (`check_shapes`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np


class ConversionError(ValueError):
    """A state dict that does not map onto the model; the message names the key."""


def flatten_colabdesign(checkpoint: Mapping) -> dict[str, np.ndarray]:
    """colabdesign's {'model_state_dict': {module: {param: array}}, ...} -> {'module/param': array}."""
    sd = checkpoint.get("model_state_dict", checkpoint)
    return {f"{m}/{p}": np.asarray(v) for m, params in sd.items() for p, v in params.items()}


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    if path[-1] in tree:
        raise ConversionError(f"two weights map onto {'/'.join(path)}")
    tree[path[-1]] = value


_LEAF = {"w": "kernel", "b": "bias", "scale": "scale", "offset": "bias", "W_s": "embedding"}


def from_colabdesign(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Flat colabdesign names -> MPNN params."""
    out: dict = {}
    for key, v in state_dict.items():
        *mods, leaf = key.split("/")
        last = [m for m in mods if m and m != "~"][-1]
        if leaf not in _LEAF:
            raise ConversionError(f"{key}: unknown parameter {leaf!r}")
        m = re.fullmatch(r"(enc|dec)(\d+)_(dense_)?(\w+)", last)
        if m:
            path = (f"{m.group(1)}{m.group(2)}",) + (("dense",) if m.group(3) else ()) + (m.group(4),)
        elif last == "embed_token":
            path = ("W_s",)
        elif last in ("embedding_linear", "edge_embedding", "norm_edges", "W_e", "W_out"):
            path = (last,)
        else:
            raise ConversionError(f"{key}: unknown module {last!r}")
        _set(out, path + (_LEAF[leaf],), np.asarray(v, np.float32))
    return out


def from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
    """PyTorch ProteinMPNN names (`model_state_dict`) -> MPNN params."""
    out: dict = {}
    for key, v in state_dict.items():
        v = np.asarray(v, np.float32)
        parts = key.split(".")
        leaf = parts[-1]
        if key == "W_s.weight":
            _set(out, ("W_s", "embedding"), v)
            continue
        if parts[0] in ("encoder_layers", "decoder_layers"):
            layer = ("enc" if parts[0] == "encoder_layers" else "dec") + parts[1]
            path = (layer,) + tuple(parts[2:-1])
        elif parts[:2] == ["features", "embeddings"]:
            path = ("embedding_linear",)
        elif parts[0] == "features":
            path = (parts[1],)
        elif parts[0] in ("W_e", "W_out"):
            path = (parts[0],)
        else:
            raise ConversionError(f"{key}: unknown module")
        is_norm = path[-1].startswith("norm")
        if leaf == "weight":
            _set(out, path + (("scale",) if is_norm else ("kernel",)), v if is_norm else v.T)
        elif leaf == "bias":
            _set(out, path + ("bias",), v)
        else:
            raise ConversionError(f"{key}: unknown parameter {leaf!r}")
    return out


def check_shapes(params: Mapping, expected: Mapping, prefix: str = "") -> None:
    """Same tree and shapes as `expected` (e.g. jax.eval_shape of MPNN.init), or ConversionError."""
    if set(params) != set(expected):
        raise ConversionError(f"{prefix or 'params'}: missing {sorted(set(expected) - set(params))}, "
                              f"unexpected {sorted(set(params) - set(expected))}")
    for k in expected:
        if isinstance(expected[k], Mapping):
            check_shapes(params[k], expected[k], f"{prefix}{k}/")
        elif tuple(np.shape(params[k])) != tuple(expected[k].shape):
            raise ConversionError(f"{prefix}{k}: shape {np.shape(params[k])}, the model expects {expected[k].shape}")
