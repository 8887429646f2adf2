"""The torch-free reader of torch.save files, on both formats written by real torch."""
import os
import pickle

import numpy as np
import pytest

from reed_jax.convert import torch_file

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.mark.parametrize("name", ["ckpt_zip.pt", "ckpt_legacy.pt"])
def test_reads_both_formats(name):
    path = os.path.join(HERE, name)
    want = np.load(os.path.join(HERE, "ckpt_expected.npz"))
    obj = torch_file.load(path)
    assert obj["steps"] == 3 and obj["args"] == {"lr": 1e-4}
    for full in want.files:
        group, key = full.split("/", 1)
        got = obj[group][key]
        assert got.shape == want[full].shape and got.dtype == want[full].dtype, (full, got.dtype, want[full].dtype)
        np.testing.assert_array_equal(got, want[full], err_msg=full)
    assert torch_file.load_state_dict(path).keys() == obj["model"].keys()  # 'model' picked by default
    assert set(torch_file.load_state_dict(path, "ema")) == {"a.weight", "a.bias", "t", "h", "b", "v1", "v2"}
    with pytest.raises(torch_file.TorchFileError, match="no entry 'opt'"):
        torch_file.load_state_dict(path, "opt")


def test_refuses_foreign_files_and_classes(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(torch_file.TorchFileError, match="not a torch.save file"):
        torch_file.load(str(bad))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        for part in (torch_file.LEGACY_MAGIC, 1001, {}):
            pickle.dump(part, fh)
        pickle.dump(Evil(), fh)
    with pytest.raises(torch_file.TorchFileError, match="refusing to unpickle"):
        torch_file.load(str(evil))


def test_safetensors_reader_matches_the_library():
    from reed_jax.convert import safetensors_file

    got = safetensors_file.load(os.path.join(HERE, "tiny.safetensors"))
    want = np.load(os.path.join(HERE, "tiny_safetensors_expected.npz"))
    assert set(got) == set(want.files)
    for k in want.files:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k])
