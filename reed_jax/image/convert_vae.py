"""diffusers AutoencoderKL state dict -> reed_jax.image.vae params (pure function, no torch).

Names: `encoder.down_blocks.0.resnets.1.conv1.weight` -> `encoder/down_blocks_0/resnets_1/conv1/kernel`
(a numeric part joins the name before it). Conv weights [O, I, kh, kw] -> [kh, kw, I, O]; Linear
[O, I] -> [I, O] (the mid-block attention, stored as 1x1 convs in some exports: squeezed);
GroupNorm weight -> scale. The attention names of older exports (`query`, `key`, `value`,
`proj_attn`) map to `to_q`, `to_k`, `to_v`, `to_out_0`. Every key must be consumed.

`from_ldm` reads the LDM / VQGAN-KL names of the latent-diffusion codebase (VA-VAE of LightningDiT,
REPA-E's original E2E-VAE `.pt` files): `ldm_names` renames them to diffusers names first
(`encoder.down.0.block.1.nin_shortcut` -> `encoder.down_blocks.0.resnets.1.conv_shortcut`,
`encoder.down.i.attn.j.{norm,q,k,v,proj_out}` -> `...attentions.j.{group_norm,query,key,value,proj_attn}`,
`mid.block_1/attn_1/block_2` -> `mid_block.resnets.0/attentions.0/resnets.1`, `norm_out` ->
`conv_norm_out`, and the decoder's `up.k` -> `up_blocks.(L-1-k)`: LDM numbers the decoder's levels
from the full resolution, diffusers from the lowest).
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


AUTOENCODER_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_LDM_BLOCK = {"block": "resnets", "attn": "attentions"}
_LDM_LEAF = {"nin_shortcut": "conv_shortcut", "norm": "group_norm", "q": "query", "k": "key", "v": "value",
             "proj_out": "proj_attn", "downsample": "downsamplers.0", "upsample": "upsamplers.0"}
_LDM_MID = {"block_1": "resnets.0", "attn_1": "attentions.0", "block_2": "resnets.1"}


def is_ldm(state_dict: Mapping[str, np.ndarray]) -> bool:
    """LDM names (`encoder.down.0.block.0...`) rather than diffusers' (`encoder.down_blocks.0.resnets.0...`)."""
    return any(k.startswith("encoder.down.") for k in state_dict)


def ldm_names(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """LDM AutoencoderKL state dict -> the same arrays under diffusers names. Keys outside the
    autoencoder (`loss.*`: LPIPS and discriminator; VA-VAE's vision-foundation projection; anything
    not under `encoder.`, `decoder.`, `quant_conv.`, `post_quant_conv.`) are training-only and dropped."""
    levels = {int(k.split(".")[2]) for k in state_dict if k.startswith("decoder.up.")}
    n = max(levels) + 1 if levels else 0
    out: dict[str, np.ndarray] = {}
    for key, v in state_dict.items():
        if not key.startswith(AUTOENCODER_PREFIXES):
            continue
        p = key.split(".")
        if p[0] in ("encoder", "decoder") and p[1] in ("down", "up"):
            level = int(p[2]) if p[1] == "down" else n - 1 - int(p[2])
            head = [p[0], f"{p[1]}_blocks", str(level)]
            rest = p[3:]
            if rest[0] in _LDM_BLOCK:
                head += [_LDM_BLOCK[rest[0]], rest[1]]
                rest = rest[2:]
            p = head + rest
        elif p[0] in ("encoder", "decoder") and p[1] == "mid":
            p = [p[0], "mid_block", _LDM_MID.get(p[2], p[2])] + p[3:]
        elif p[0] in ("encoder", "decoder") and p[1] == "norm_out":
            p = [p[0], "conv_norm_out"] + p[2:]
        name = ".".join(_LDM_LEAF.get(x, x) for x in p)
        if name in out:
            raise ConversionError(f"{key}: two LDM entries map to {name}")
        out[name] = v
    return out


def from_ldm(state_dict: Mapping[str, np.ndarray], expected: dict | None = None) -> dict:
    """LDM-named AutoencoderKL state dict -> reed_jax.image.vae params (`ldm_names`, then `from_diffusers`)."""
    return from_diffusers(ldm_names(state_dict), expected)


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
