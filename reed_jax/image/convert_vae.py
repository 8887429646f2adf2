"""diffusers AutoencoderKL state dict -> reed_jax.image.vae params (pure function, no torch).

Names: `encoder.down_blocks.0.resnets.1.conv1.weight` -> `encoder/down_blocks_0/resnets_1/conv1/kernel`
(a numeric part joins the name before it). Conv weights [O, I, kh, kw] -> [kh, kw, I, O]; Linear
[O, I] -> [I, O] (the mid-block attention, stored as 1x1 convs in some exports: squeezed);
GroupNorm weight -> scale. The attention names of older exports (`query`, `key`, `value`,
`proj_attn`) map to `to_q`, `to_k`, `to_v`, `to_out_0`. Every key must be consumed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}


class ConversionError(ValueError):
    pass


def _path(key: str) -> list[str]:
    parts = key.split(".")
    out: list[str] = []
    for p in parts:
        if p.isdigit() and out:
            out[-1] = f"{out[-1]}_{p}"
        else:
            out.append(OLD_ATTENTION.get(p, p))
    return out


def check_structure(params: dict, expected: dict) -> None:
    """Every param of `expected` (e.g. `jax.eval_shape` of the model's init) present with its shape,
    nothing else: a checkpoint of another configuration fails naming the first difference."""
    import jax

    flat = lambda t: {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    have, want = flat(params), flat(expected)
    for k in sorted(set(have) | set(want)):
        if k not in have:
            raise ConversionError(f"state dict has no weights for {k}")
        if k not in want:
            raise ConversionError(f"state dict key {k} is not part of this AutoencoderKL configuration")
        if have[k] != want[k]:
            raise ConversionError(f"{k}: state dict shape {have[k]} != model shape {want[k]}")


def from_diffusers(state_dict: Mapping[str, np.ndarray], expected: dict | None = None) -> dict:
    """`expected`: optional abstract params of the target model, checked with `check_structure`."""
    params: dict = {}
    for key, value in state_dict.items():
        v = np.asarray(value, np.float32)
        *mods, leaf = _path(key)
        if leaf not in ("weight", "bias"):
            raise ConversionError(f"unexpected AutoencoderKL key {key!r}")
        last = mods[-1] if mods else ""
        is_attn = last in ("to_q", "to_k", "to_v", "to_out_0")
        is_norm = "norm" in last
        if leaf == "weight":
            if is_norm:
                name, v = "scale", v
            elif is_attn:
                name, v = "kernel", v.reshape(v.shape[0], v.shape[1]).T
            elif v.ndim == 4:
                name, v = "kernel", v.transpose(2, 3, 1, 0)
            else:
                raise ConversionError(f"{key}: weight of shape {v.shape} is neither a conv, a linear nor a norm")
        else:
            name = "bias"
        node = params
        for m in mods:
            node = node.setdefault(m, {})
        if name in node:
            raise ConversionError(f"{key}: two state-dict entries map to {'/'.join(mods + [name])}")
        node[name] = v
    if expected is not None:
        check_structure(params, expected)
    return params
