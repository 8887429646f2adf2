"""PyTorch SiT / REPA / REED state dict -> reed_jax SiT params (pure function, no torch).

Reference names (NCHW, torch Linear weights [out, in]):
`x_embedder.proj.{weight,bias}`, `t_embedder.mlp.{0,2}.*`, `y_embedder.embedding_table.weight`,
`blocks.{i}.attn.{qkv,proj}.*`, `blocks.{i}.mlp.fc{1,2}.*`, `blocks.{i}.adaLN_modulation.1.*`,
`final_layer.adaLN_modulation.1.*`, `final_layer.linear.*`, `projectors.{k}.{0,2,4}.*`, `pos_embed`.
Ours are NHWC: the conv kernel becomes [p, p, C, D], Linear weights are transposed to [in, out].
A checkpoint trained with learned sigma (final Linear of width p*p*2C) keeps the velocity half.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from reed_jax.image.sit import sincos_2d, stack_blocks


class ConversionError(ValueError):
    pass


def _linear(sd, prefix):
    return {"kernel": np.asarray(sd[prefix + ".weight"]).T, "bias": np.asarray(sd[prefix + ".bias"])}


def from_torch(state_dict: Mapping[str, np.ndarray], target_names: Sequence[str] = (),
               drop_projectors: bool = False, in_channels: int | None = None,
               scan_segments: Sequence[tuple[int, int]] | None = None) -> dict:
    """Convert a reference state dict (numpy arrays) to our `params` tree.

    target_names: our names of the reference's `projectors.{k}`, in order (REPA: one; REED: two).
    drop_projectors: discard projector weights (sampling/evaluation only).
    in_channels: C of the data; required to slice a learned-sigma final layer (default: from the
    patch embedding).
    scan_segments: for a model with `scan=True`, its `block_segments(depth, targets)`; the blocks
    are then stacked into that layout.
    Every key is consumed or the call fails, so no weight is silently dropped.
    """
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
    used = set()

    def take(prefix):
        used.update({prefix + ".weight", prefix + ".bias"})
        missing = [k for k in (prefix + ".weight", prefix + ".bias") if k not in sd]
        if missing:
            raise ConversionError(f"state dict is missing {missing}")
        return _linear(sd, prefix)

    w = sd["x_embedder.proj.weight"]  # [D, C, p, p]
    used.update({"x_embedder.proj.weight", "x_embedder.proj.bias"})
    hidden, c, p, _ = w.shape
    c = in_channels or c
    params = {
        "x_embedder": {"kernel": w.transpose(2, 3, 1, 0), "bias": sd["x_embedder.proj.bias"]},
        "t_embedder": {"mlp_0": take("t_embedder.mlp.0"), "mlp_2": take("t_embedder.mlp.2")},
        "y_embedder": {"embedding_table": sd["y_embedder.embedding_table.weight"]},
    }
    used.add("y_embedder.embedding_table.weight")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    for i in range(depth):
        b = f"blocks.{i}"
        params[f"blocks_{i}"] = {
            "attn": {"qkv": take(f"{b}.attn.qkv"), "proj": take(f"{b}.attn.proj")},
            "mlp": {"fc1": take(f"{b}.mlp.fc1"), "fc2": take(f"{b}.mlp.fc2")},
            "adaLN_modulation": take(f"{b}.adaLN_modulation.1"),
        }
    final = take("final_layer.linear")
    out = final["kernel"].shape[1]
    if out == 2 * p * p * c:  # learned sigma: output channels ordered (p, q, 2C); keep the first C
        final = {"kernel": final["kernel"].reshape(hidden, p, p, 2 * c)[..., :c].reshape(hidden, p * p * c),
                 "bias": final["bias"].reshape(p, p, 2 * c)[..., :c].reshape(-1)}
    elif out != p * p * c:
        raise ConversionError(f"final_layer.linear has {out} outputs; expected p*p*C = {p * p * c} (or twice that)")
    params["final_layer"] = {"adaLN_modulation": take("final_layer.adaLN_modulation.1"), "linear": final}

    proj_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"projectors\.(\d+)\.", k))})
    if proj_ids and not drop_projectors:
        if len(proj_ids) != len(target_names):
            raise ConversionError(f"state dict has {len(proj_ids)} projectors; target_names names {len(target_names)}")
        for k, name in zip(proj_ids, target_names):
            params[f"projectors_{name}"] = {f"dense_{j}": take(f"projectors.{k}.{j}") for j in (0, 2, 4)}
    else:
        used.update(k for k in sd if k.startswith("projectors."))

    if "pos_embed" in sd:
        used.add("pos_embed")
        pe = sd["pos_embed"].reshape(-1, hidden)
        grid = int(round(np.sqrt(pe.shape[0])))
        if not np.allclose(pe, sincos_2d(hidden, grid), atol=1e-5):
            raise ConversionError("pos_embed is not the fixed 2D sin-cos embedding this model computes")
    unused = sorted(set(sd) - used)
    if unused:
        raise ConversionError(f"state dict keys not converted: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    if scan_segments is not None:
        if not scan_segments or scan_segments[0][0] != 0 or scan_segments[-1][1] != depth:
            raise ConversionError(f"scan_segments {list(scan_segments)} do not cover the state dict's {depth} blocks")
        params = {k: (jax.tree.map(np.asarray, v) if k.startswith("blocks_") else v)
                  for k, v in stack_blocks(params, scan_segments).items()}
    return params
