"""Read PyTorch `.pt` / `.pth` files into numpy without torch.

Both formats `torch.save` writes: the zip archive (torch >= 1.6: `<name>/data.pkl` plus one file
per storage under `<name>/data/`) and the legacy stream (magic number, protocol, system info,
the pickled object, the storage keys, then each storage's element count and raw bytes; e.g.
pytorch-fid's 2019 `pt_inception-2015-12-05-6726825d.pth`). Tensors become numpy arrays (bfloat16
storages become float32); nested dicts/lists/tuples are kept, so a checkpoint holding
`{"model": ..., "ema": ..., "opt": ...}` comes back as such.

The file is untrusted:
- every pickle in it goes through a restricted unpickler. The object pickle may name only the
  classes a state dict needs (tensor rebuilders, storage types, OrderedDict, torch.device); the
  legacy format's four header slots (magic number, protocol version, system info, storage keys)
  may hold only plain values (ints, strings, bools, lists, tuples, dicts), no global at all.
  Anything else raises `TorchFileError` naming it; no code from the file ever runs.
- every tensor view is checked against its storage before it is taken: sizes, strides and the
  offset must be non-negative integers, the view's furthest element must lie inside the storage,
  and each storage's byte count must match its element count and dtype. A crafted file can never
  read outside the bytes it holds.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any

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


def _int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise TorchFileError(f"tensor {what} {x!r} is not a non-negative integer")
    return x


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *args) -> np.ndarray:
    """The view (offset, size, stride), in elements, of a 1-D storage, copied; refused unless it
    lies entirely inside the storage."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise TorchFileError(f"tensor storage is a {type(storage).__name__}, not a storage")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or len(size) != len(stride):
        raise TorchFileError(f"tensor size {size!r} and stride {stride!r} do not describe a view")
    offset = _int(offset, "storage offset")
    size = tuple(_int(n, "size") for n in size)
    stride = tuple(_int(n, "stride") for n in stride)
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.shape[0]:
        raise TorchFileError(f"tensor view (offset {offset}, size {size}, stride {stride}) reaches element {last} "
                             f"of a storage of {storage.shape[0]} elements")
    if not size:
        return np.array(storage[offset], copy=True)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(st * storage.itemsize for st in stride))
    return np.array(view, copy=True)


class _Deferred:
    """A legacy-format tensor: its storage bytes follow the pickle, so it is built afterwards."""

    def __init__(self, storage: _Lazy, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Lazy:
    def __init__(self, dtype, view_offset: int = 0, root: _Lazy | None = None):
        self.dtype, self.view_offset, self.root, self.array = dtype, view_offset, root, None


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy header slots: plain values only (no global, no persistent id)."""

    def __init__(self, fh, slot: str):
        super().__init__(fh)
        self._slot = slot

    def find_class(self, module, name):
        raise TorchFileError(f"the {self._slot} of a torch.save file names {module}.{name}; it may hold only plain "
                             f"values; refusing to unpickle it")

    def persistent_load(self, pid):
        raise TorchFileError(f"the {self._slot} of a torch.save file holds a persistent id; refusing it")


def _plain(fh, slot: str):
    return _PlainUnpickler(fh, slot).load()


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
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        view = pid[5] if len(pid) > 5 else None
        return self._load_storage(str(pid[2]), pid[1].dtype, _int(pid[4], "storage element count"), view)


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as z:
        pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TorchFileError(f"{path}: zip archive without data.pkl: not a torch.save file")
        root = pkl[: -len("data.pkl")]
        cache: dict[str, np.ndarray] = {}

        def load_storage(key, dtype, numel, view):
            if key not in cache:
                name = f"{root}data/{key}"
                try:
                    raw = z.read(name)
                except KeyError:
                    raise TorchFileError(f"{path}: storage {key!r} ({name}) is missing from the archive") from None
                if len(raw) != numel * _itemsize(dtype):
                    raise TorchFileError(f"{path}: storage {key!r} holds {len(raw)} bytes; {numel} elements of "
                                         f"{_dtype_name(dtype)} need {numel * _itemsize(dtype)}")
                cache[key] = _bytes_to_array(raw, dtype)
            if view is not None:
                raise TorchFileError(f"{path}: storage views are not part of the zip format")
            return cache[key]

        return _Unpickler(io.BytesIO(z.read(pkl)), load_storage, _rebuild_tensor).load()


def _itemsize(dtype) -> int:
    return 2 if isinstance(dtype, str) else np.dtype(dtype).itemsize


def _dtype_name(dtype) -> str:
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


def _load_legacy(path: str) -> Any:
    roots: dict[str, _Lazy] = {}

    def load_storage(key, dtype, numel, view):
        root = roots.setdefault(key, _Lazy(dtype))
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise TorchFileError(f"{path}: storage view {view!r} is not (key, offset, size)")
        return _Lazy(dtype, _int(view[1], "storage view offset"), root)

    defer = lambda storage, offset, size, stride, *a: _Deferred(storage, offset, size, stride)
    with open(path, "rb") as fh:
        try:
            magic = _plain(fh, "magic number")
        except TorchFileError:
            raise
        except Exception as e:  # noqa: BLE001
            raise TorchFileError(f"{path}: not a torch.save file ({e})") from e
        if magic != LEGACY_MAGIC:
            raise TorchFileError(f"{path}: not a torch.save file (bad magic number)")
        _plain(fh, "protocol version")
        _plain(fh, "system info")
        obj = _Unpickler(fh, load_storage, defer).load()
        keys = _plain(fh, "storage key list")
        if not isinstance(keys, (list, tuple)):
            raise TorchFileError(f"{path}: the storage key list is a {type(keys).__name__}")
        for key in keys:
            lazy = roots.get(str(key))
            if lazy is None:
                raise TorchFileError(f"{path}: storage {key!r} is listed but no tensor uses it")
            head = fh.read(8)
            if len(head) != 8:
                raise TorchFileError(f"{path}: truncated before storage {key!r}")
            (numel,) = struct.unpack("<q", head)
            if numel < 0:
                raise TorchFileError(f"{path}: storage {key!r} has a negative element count {numel}")
            want = numel * _itemsize(lazy.dtype)
            raw = fh.read(want)
            if len(raw) != want:
                raise TorchFileError(f"{path}: storage {key!r} is truncated: {len(raw)} of {want} bytes")
            lazy.array = _bytes_to_array(raw, lazy.dtype)
    return _resolve(obj, path)


def _resolve(obj, path: str):
    if isinstance(obj, _Deferred):
        s = obj.storage
        root = s.root if s.root is not None else s
        if root.array is None:
            raise TorchFileError(f"{path}: a tensor uses a storage whose bytes the file does not hold")
        if s.view_offset > root.array.shape[0]:
            raise TorchFileError(f"{path}: storage view offset {s.view_offset} is past its storage "
                                 f"({root.array.shape[0]} elements)")
        return _rebuild_tensor(root.array[s.view_offset:], obj.offset, obj.size, obj.stride)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, path)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, path) for v in obj)
    return obj


def load(path: str) -> Any:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays. A file that is malformed,
    or that asks for anything a state dict cannot hold, raises `TorchFileError` naming `path`."""
    try:
        return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except TorchFileError as e:
        if path in str(e):
            raise
        raise TorchFileError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, zipfile.BadZipFile, RecursionError, MemoryError) as e:
        raise TorchFileError(f"{path}: not a readable torch.save file ({type(e).__name__}: {e})") from None


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
