"""Hostile weight files: every pickle slot refuses code, every tensor view stays inside its storage.

Each crafted file carries a payload that, if it ran, would create a sentinel directory; every test
asserts both the refusal (a `TorchFileError`/`JoblibFileError` naming the problem) and that the
sentinel does not exist afterwards.
"""
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from reed_jax.convert import joblib_file, torch_file


class _Payload:
    """Unpickling this runs os.mkdir(path): the side effect a safe reader must never allow."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _legacy(path, slots):
    with open(path, "wb") as fh:
        for part in slots:
            pickle.dump(part, fh, protocol=2)


# ----------------------------------------------------------------------------- pickle slots

_SLOTS = ["magic number", "protocol version", "system info", "object", "storage key list"]


@pytest.mark.parametrize("slot", range(5), ids=_SLOTS)
def test_every_legacy_pickle_slot_refuses_code(tmp_path, slot):
    sentinel = tmp_path / "pwned"
    good = [torch_file.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}, {"steps": 3}, []]
    parts = good[:slot] + [_Payload(sentinel)]
    path = tmp_path / "evil.pth"
    _legacy(path, parts)
    match = "refusing to unpickle" if slot == 3 else f"the {_SLOTS[slot]} .*names (posix|os)\\.mkdir"
    with pytest.raises(torch_file.TorchFileError, match=match):
        torch_file.load(str(path))
    assert not sentinel.exists()
    with pytest.raises(torch_file.TorchFileError):  # the entry point the importer uses
        torch_file.load_state_dict(str(path))
    assert not sentinel.exists()


def test_plain_legacy_file_still_reads(tmp_path):
    """The same header slots with plain values and a tensor-free object read back (the slots'
    restriction refuses only globals)."""
    path = tmp_path / "plain.pth"
    _legacy(path, [torch_file.LEGACY_MAGIC, 1001, {"protocol_version": 1001, "type_sizes": {"int": 4}},
                   {"steps": 3, "args": [1, "a"]}, []])
    assert torch_file.load(str(path)) == {"steps": 3, "args": [1, "a"]}


def test_zip_data_pickle_refuses_code(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Payload(sentinel)}, protocol=2))
    with pytest.raises(torch_file.TorchFileError, match=f"{path}.*refusing to unpickle"):
        torch_file.load(str(path))
    assert not sentinel.exists()


def test_joblib_reader_refuses_code(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": _Payload(sentinel)}, protocol=2))
    with pytest.raises(joblib_file.JoblibFileError, match="refusing to load (posix|os).mkdir"):
        joblib_file.load(str(path))
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- crafted tensor views

def _int_op(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)  # BININT: signed 32-bit, so negative values can be written


def _str_op(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tensor_pickle(numel: int, offset: int, size, stride, storage="FloatStorage") -> bytes:
    """{'w': torch._utils._rebuild_tensor_v2(<storage '0' of `numel` elements>, offset, size, stride,
    False, OrderedDict())} as the opcodes torch.save writes, without torch."""
    tup = lambda xs: b"(" + b"".join(_int_op(x) for x in xs) + b"t"
    pid = b"(" + _str_op("storage") + f"ctorch\n{storage}\n".encode() + _str_op("0") + _str_op("cpu") + \
        _int_op(numel) + b"tQ"
    args = b"(" + pid + _int_op(offset) + tup(size) + tup(stride) + b"\x89" + \
        b"ccollections\nOrderedDict\n)R" + b"t"
    return b"\x80\x02}" + _str_op("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


def _zip_tensor(path, numel, offset, size, stride, data: bytes | None = None):
    data = np.arange(numel, dtype="<f4").tobytes() if data is None else data
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _tensor_pickle(numel, offset, size, stride))
        z.writestr("archive/data/0", data)
    return str(path)


def test_crafted_views_read_when_in_bounds(tmp_path):
    """The hand-written opcodes are what torch writes: an in-bounds view (transposed, offset) reads."""
    got = torch_file.load(_zip_tensor(tmp_path / "ok.pt", 8, 1, (3, 2), (1, 3)))["w"]
    np.testing.assert_array_equal(got, np.array([[1 + i + 3 * j for j in range(2)] for i in range(3)], np.float32))
    np.testing.assert_array_equal(torch_file.load(_zip_tensor(tmp_path / "e.pt", 4, 0, (0, 5), (5, 1)))["w"],
                                  np.zeros((0, 5), np.float32))


@pytest.mark.parametrize("numel,offset,size,stride,data,match", [
    (4, 0, (-1,), (1,), None, "size -1 is not a non-negative"),
    (4, 0, (2, 2), (-2, 1), None, "stride -2 is not a non-negative"),
    (4, -3, (2,), (1,), None, "storage offset -3"),
    (4, 0, (10,), (1,), None, "reaches element 9 of a storage of 4 elements"),
    (4, 3, (2,), (1,), None, "reaches element 4 of a storage of 4"),
    (4, 0, (2, 2), (1, 1_000_000), None, "reaches element 1000001"),
    (4, 5, (), (), None, "reaches element 5"),  # a scalar past the end
    (4, 0, (4,), (1,), b"\0" * 15, "holds 15 bytes; 4 elements of float32 need 16"),
    (4, 0, (4,), (1,), b"\0" * 64, "holds 64 bytes; 4 elements of float32 need 16"),
    (-4, 0, (4,), (1,), b"", "storage element count -4"),
], ids=["neg-size", "neg-stride", "neg-offset", "past-end", "offset-past-end", "huge-stride", "scalar-past-end",
        "short-storage", "long-storage", "neg-numel"])
def test_out_of_bounds_views_are_refused(tmp_path, numel, offset, size, stride, data, match):
    path = _zip_tensor(tmp_path / "oob.pt", numel, offset, size, stride, data)
    with pytest.raises(torch_file.TorchFileError, match=match):
        torch_file.load(path)


def _legacy_tensor(path, numel_in_header: int, numel_on_disk: int, nbytes: int):
    """A legacy-format file with one float32 tensor of `numel_in_header` elements whose storage
    record claims `numel_on_disk` elements and holds `nbytes` bytes."""
    with open(path, "wb") as fh:
        for part in (torch_file.LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(part, fh, protocol=2)
        fh.write(_tensor_pickle(numel_in_header, 0, (numel_in_header,), (1,)))
        pickle.dump(["0"], fh, protocol=2)
        fh.write(struct.pack("<q", numel_on_disk) + b"\0" * nbytes)
    return str(path)


def test_legacy_storages_are_checked(tmp_path):
    ok = torch_file.load(_legacy_tensor(tmp_path / "ok.pth", 4, 4, 16))["w"]
    np.testing.assert_array_equal(ok, np.zeros(4, np.float32))
    with pytest.raises(torch_file.TorchFileError, match="truncated: 8 of 16 bytes"):
        torch_file.load(_legacy_tensor(tmp_path / "short.pth", 4, 4, 8))
    with pytest.raises(torch_file.TorchFileError, match="negative element count"):
        torch_file.load(_legacy_tensor(tmp_path / "neg.pth", 4, -1, 16))
    with pytest.raises(torch_file.TorchFileError, match="reaches element 3 of a storage of 2"):
        torch_file.load(_legacy_tensor(tmp_path / "small.pth", 4, 2, 8))
