"""Read joblib pickles of numpy arrays (colabdesign's ProteinMPNN weights) without running pickle code.

joblib writes each array as a `joblib.numpy_pickle.NumpyArrayWrapper` object (shape, order, dtype,
...) followed, right after its BUILD opcode, by the raw array bytes (after one padding-length byte
and that much padding when the wrapper has `numpy_array_alignment_bytes`). This reader uses the
pure-Python unpickler with an allow-list: only containers, numpy dtypes and a stand-in for the
wrapper class are ever constructed (no `__reduce__` callables, no imports beyond the list), and
the array bytes are read straight from the file. Anything else is refused with `JoblibFileError`.
"""
from __future__ import annotations

import io
import pickle

import numpy as np


class JoblibFileError(ValueError):
    """Not a joblib numpy pickle, or one that asks for something outside the allow-list."""


class _Wrapper:
    """Stand-in for joblib.numpy_pickle.NumpyArrayWrapper: attributes only, set by BUILD."""


class _NdarrayMarker:
    """Stand-in for numpy.ndarray (the wrapper's `subclass` attribute); never instantiated."""


def _dtype(*args):
    """numpy.dtype(name, align, copy) as pickle reconstructs it; only plain numeric dtypes."""
    dt = np.dtype(args[0])
    if dt.hasobject or dt.kind not in "biufc":
        raise JoblibFileError(f"array dtype {dt} is not a plain numeric dtype")
    return dt


_ALLOWED = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _Wrapper,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _dtype,
}


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its opcode table can be extended
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise JoblibFileError(f"refusing to load {module}.{name} (not an array or container)") from None

    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, np.dtype):
            inst.__setstate__(state)  # byte order / flags of a numeric dtype
            return
        if not isinstance(inst, _Wrapper) or not isinstance(state, dict):
            raise JoblibFileError(f"refusing to BUILD a {type(inst).__name__}")
        inst.__dict__.update(state)
        stack[-1] = self._read_array(inst)

    def _read_array(self, w: _Wrapper) -> np.ndarray:
        dtype, shape, order = w.dtype, tuple(int(s) for s in w.shape), w.order
        if getattr(w, "numpy_array_alignment_bytes", None) is not None:
            pad = self.read(1)[0]
            self.read(pad)
        count = int(np.prod(shape, dtype=np.int64))
        data = self.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise JoblibFileError(f"truncated array data: {len(data)} of {count * dtype.itemsize} bytes")
        a = np.frombuffer(data, dtype=dtype, count=count)
        a = a.reshape(shape[::-1]).T if order == "F" else a.reshape(shape)
        return np.array(a, dtype=dtype.newbyteorder("="))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def loads(data: bytes):
    """The object in a joblib pickle (nested dicts/lists of numpy arrays and plain values)."""
    if data[:2] == b"\x1f\x8b" or data[:4] in (b"\x28\xb5\x2f\xfd",) or data[:3] == b"BZh":
        raise JoblibFileError("compressed joblib files are not supported (these weights are stored raw)")
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except JoblibFileError:
        raise
    except Exception as e:  # noqa: BLE001  (malformed stream)
        raise JoblibFileError(f"not a readable joblib pickle: {type(e).__name__}: {e}") from None


def load(path: str):
    with open(path, "rb") as fh:
        return loads(fh.read())
