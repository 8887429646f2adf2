"""pytorch-fid's FID Inception state dict (`pt_inception-2015-12-05-6726825d.pth`) -> FIDInception params.

Pure function over numpy arrays (no torch). Torch names: `<module>.conv.weight` [O, I, kh, kw],
`<module>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}`, `fc.{weight,bias}`
([1008, 2048], [1008]). Conv kernels become [kh, kw, I, O]; the softmax weight becomes
`fc_kernel` [2048, 1008]. `fc.bias` is not used: the ADM evaluator's Inception Score multiplies
pool_3 by the softmax weight alone. Every other key must be consumed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class ConversionError(ValueError):
    pass


def from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
    params: dict = {}
    used = set()
    for key in sd:
        if not key.endswith(".conv.weight"):
            continue
        path = key[: -len(".conv.weight")].split(".")
        prefix = ".".join(path)
        bn = {name: f"{prefix}.bn.{t}" for name, t in
              (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))}
        missing = [k for k in bn.values() if k not in sd]
        if missing:
            raise ConversionError(f"state dict is missing {missing}")
        node = params
        for p in path:
            node = node.setdefault(p, {})
        node["conv"] = {"kernel": sd[key].transpose(2, 3, 1, 0).astype(np.float32)}
        node["bn"] = {name: sd[k].astype(np.float32) for name, k in bn.items()}
        used.update([key, *bn.values()])
        used.discard(f"{prefix}.bn.num_batches_tracked")
    if "fc.weight" not in sd:
        raise ConversionError("state dict has no fc.weight (the 1008-way softmax layer)")
    params["fc_kernel"] = sd["fc.weight"].T.astype(np.float32)
    used.update({"fc.weight", "fc.bias"})
    unused = sorted(k for k in set(sd) - used if not k.endswith("num_batches_tracked"))
    if unused:
        raise ConversionError(f"state dict keys not converted: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    return params
