"""Read PyTorch `.pt` / `.pth` files into numpy without torch.

Both formats `torch.save` writes: the zip archive (torch >= 1.6: `<name>/data.pkl` plus one file
per storage under `<name>/data/`) and the legacy stream (magic number, protocol, system info,
the pickled object, the storage keys, then each storage's element count and raw bytes; e.g.
pytorch-fid's 2019 `pt_inception-2015-12-05-6726825d.pth`). Tensors become numpy arrays (bfloat16
storages become float32); nested dicts/lists/tuples are kept, so a checkpoint holding
`{"model": ..., "ema": ..., "opt": ...}` comes back as such. Only the classes a state dict needs
are unpickled; anything else raises `TorchFileError` naming it (no arbitrary code runs).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np


class TorchFileError(ValueError):
    pass


_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_SCALAR_TYPES = {  # torch.float32 etc. as pickled in UntypedStorage-era files
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16",
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _DTYPES.get(name) or _SCALAR_TYPES.get(name)
        if self.dtype is None:
            raise TorchFileError(f"unsupported torch storage type {name!r}")


def _bytes_to_array(raw: bytes, dtype) -> np.ndarray:
    if isinstance(dtype, str):  # bfloat16: the high half of a float32
        u16 = np.frombuffer(raw, "<u2")
        return (u16.astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *args) -> np.ndarray:
    if not size:
        return np.array(storage[offset], copy=True)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view, copy=True)


class _Deferred:
    """A legacy-format tensor: its storage bytes follow the pickle, so it is built afterwards."""

    def __init__(self, storage: "_Lazy", offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Lazy:
    def __init__(self, dtype, view_offset: int = 0, root: "_Lazy | None" = None):
        self.dtype, self.view_offset, self.root, self.array = dtype, view_offset, root, None


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, load_storage: Callable, rebuild: Callable):
        super().__init__(fh)
        self._load_storage, self._rebuild = load_storage, rebuild

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *args: data
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and (name.endswith("Storage") or name in _SCALAR_TYPES):
            return _StorageType(name)
        if module == "torch" and name == "device":
            return str
        raise TorchFileError(f"{module}.{name} is not part of a state dict; refusing to unpickle it")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        view = pid[5] if len(pid) > 5 else None
        return self._load_storage(str(pid[2]), pid[1].dtype, view)


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as z:
        pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TorchFileError(f"{path}: zip archive without data.pkl: not a torch.save file")
        root = pkl[: -len("data.pkl")]
        cache: dict[str, np.ndarray] = {}

        def load_storage(key, dtype, view):
            if key not in cache:
                cache[key] = _bytes_to_array(z.read(f"{root}data/{key}"), dtype)
            return cache[key]

        return _Unpickler(io.BytesIO(z.read(pkl)), load_storage, _rebuild_tensor).load()


def _itemsize(dtype) -> int:
    return 2 if isinstance(dtype, str) else np.dtype(dtype).itemsize


def _load_legacy(path: str) -> Any:
    roots: dict[str, _Lazy] = {}

    def load_storage(key, dtype, view):
        root = roots.setdefault(key, _Lazy(dtype))
        if view is None:
            return root
        _, offset, _ = view  # (view key, offset in elements, size)
        return _Lazy(dtype, int(offset), root)

    defer = lambda storage, offset, size, stride, *a: _Deferred(storage, offset, size, stride)
    with open(path, "rb") as fh:
        try:
            magic = pickle.load(fh)
        except Exception as e:  # noqa: BLE001
            raise TorchFileError(f"{path}: not a torch.save file ({e})") from e
        if magic != LEGACY_MAGIC:
            raise TorchFileError(f"{path}: not a torch.save file (bad magic number)")
        pickle.load(fh)  # protocol version
        pickle.load(fh)  # system info
        obj = _Unpickler(fh, load_storage, defer).load()
        for key in pickle.load(fh):
            (numel,) = struct.unpack("<q", fh.read(8))
            lazy = roots[str(key)]
            lazy.array = _bytes_to_array(fh.read(numel * _itemsize(lazy.dtype)), lazy.dtype)
    return _resolve(obj)


def _resolve(obj):
    if isinstance(obj, _Deferred):
        s = obj.storage
        arr = s.root.array[s.view_offset:] if s.root is not None else s.array
        return _rebuild_tensor(arr, obj.offset, obj.size, obj.stride)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def load(path: str) -> Any:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays."""
    return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)


def load_state_dict(path: str, key: str | None = None) -> dict[str, np.ndarray]:
    """A flat {name: array} state dict from a torch file; `key` picks a sub-dict (e.g. 'ema',
    'model'); by default the file itself, or its 'state_dict' / 'model' entry when it has one."""
    obj = load(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise TorchFileError(f"{path}: no entry {key!r} (has {have})")
        obj = obj[key]
    elif isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for k in ("state_dict", "model"):
            if k in obj:
                obj = obj[k]
                break
    if not isinstance(obj, dict):
        raise TorchFileError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
