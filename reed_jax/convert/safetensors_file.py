"""Read `.safetensors` files into numpy without the safetensors package (the format is an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the bytes).
BF16 tensors become float32."""
from __future__ import annotations

import json
import struct

import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class SafetensorsError(ValueError):
    pass


def load(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise SafetensorsError(f"{path}: header of {n} bytes: not a safetensors file")
        try:
            header = json.loads(fh.read(n))
        except json.JSONDecodeError as e:
            raise SafetensorsError(f"{path}: unreadable header ({e})") from e
        data = fh.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            arr = np.frombuffer(raw, np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"]).copy()
    return out
