"""Size-bucketed batches: assignment, cropping, determinism, resume and per-process slices."""
import numpy as np
import pytest

from reed_jax.data import buckets, records


def write_chains(tmp_path, lengths, max_len=16):
    ex = []
    for i, n in enumerate(lengths):
        mask = np.zeros(max_len, np.float32)
        mask[:n] = 1
        mask[n // 2] = 0  # a gap inside the chain does not shorten it
        ex.append({"mask": mask, "x": np.arange(max_len, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                   "index": np.int64(i)})
    schema = records.Schema.of(ex[0])
    rows = records.write_split(str(tmp_path), "train", schema, ex, 2)
    records.write_manifest(str(tmp_path), schema, rows)
    return str(tmp_path)


def test_lengths_and_assignment_fold_small_buckets():
    m = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(buckets.lengths_of(m), [4, 0, 6])
    lengths = np.array([3, 4, 5, 9, 10, 11, 12, 15, 16, 16])
    kept, groups = buckets.assign(lengths, (4, 8, 12, 16), min_count=2)
    # bucket 4 holds 2 (kept), bucket 8 holds 1 -> folded into 12, 12 then holds 5, 16 holds 3
    assert kept == [4, 12, 16]
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3, 4, 5, 6], [7, 8, 9]]
    kept, groups = buckets.assign(lengths, (4, 8, 12, 16), min_count=4)  # the top bucket (3) folds down
    assert kept == [16] and [len(g) for g in groups] == [10]
    with pytest.raises(records.DataError, match="exceeds the largest bucket 16"):
        buckets.assign(np.array([17]), (8, 16), 1)
    with pytest.raises(records.DataError, match="cannot fill one batch of 4"):
        buckets.assign(np.array([3, 3]), (8, 16), 4)


def test_batches_cropped_deterministic_resumable_and_disjoint(tmp_path):
    lengths = [3, 4, 4, 5, 7, 8, 8, 8, 12, 13, 14, 16, 16, 15, 11, 9]
    d = write_chains(tmp_path, lengths)
    mk = lambda **kw: buckets.make_loader(d, "train", 2, (8, 16), ["mask", "x"], seed=3, log=lambda *_: None, **kw)
    it = mk()
    assert it.buckets == [8, 16]
    seen = [next(it) for _ in range(12)]
    shapes = {b["x"].shape for b in seen}
    assert shapes == {(2, 8, 3), (2, 16, 3)}  # both buckets drawn, each cropped to its length
    for b in seen:
        n = b["mask"].shape[1]
        assert all((lengths[i] <= 8) == (n == 8) for i in b["index"])  # every chain in its smallest bucket
        np.testing.assert_array_equal(b["x"][0, :, 0], np.arange(n))
    # one epoch of a bucket visits each of its records once
    first8 = np.concatenate([b["index"] for b in seen if b["mask"].shape[1] == 8][:4])
    assert sorted(first8.tolist()) == [i for i, n in enumerate(lengths) if n <= 8]
    # same seed -> same batches; a restored state continues with the very next batch
    it2 = mk()
    for b in seen[:5]:
        np.testing.assert_array_equal(next(it2)["index"], b["index"])
    it3 = mk()
    it3.set_state(it2.get_state())
    for b in seen[5:]:
        np.testing.assert_array_equal(next(it3)["index"], b["index"])
    # two processes: the same bucket at each step, disjoint halves of the global batch
    p0, p1 = mk(shard_index=0, shard_count=2), mk(shard_index=1, shard_count=2)
    for _ in range(6):
        a, b = next(p0), next(p1)
        assert a["x"].shape == b["x"].shape and not set(a["index"]) & set(b["index"])
    with pytest.raises(records.DataError, match="saved with buckets"):
        other = buckets.make_loader(d, "train", 2, (12, 16), ["mask", "x"], seed=3, log=lambda *_: None)
        other.set_state(it2.get_state())
    with pytest.raises(records.DataError, match="field 'x'.*largest bucket 32"):
        buckets.make_loader(d, "train", 2, (8, 32), ["x"], seed=3)


def test_two_axis_crop_for_pairwise_fields(tmp_path):
    """A molecule's bonds [N, N] are cropped on both axes; the mask on one."""
    ex = []
    for i, n in enumerate([3, 4, 4, 7, 8, 8]):
        mask = (np.arange(8) < n).astype(np.float32)
        ex.append({"mask": mask, "bonds": np.outer(mask, mask).astype(np.int32), "index": np.int64(i)})
    schema = records.Schema.of(ex[0])
    records.write_manifest(str(tmp_path), schema, records.write_split(str(tmp_path), "train", schema, ex, 1))
    it = buckets.make_loader(str(tmp_path), "train", 3, (4, 8), {"mask": 1, "bonds": 2}, seed=0, log=lambda *_: None)
    shapes = {next(it)["bonds"].shape for _ in range(8)}
    assert shapes == {(3, 4, 4), (3, 8, 8)}
    with pytest.raises(records.DataError, match="crops its first 2 axes"):
        buckets.make_loader(str(tmp_path), "train", 3, (4, 8), {"mask": 2}, seed=0)
