"""The batched reader (records.decode_batch, ShardSource.read_batch, GlobalBatches over shards)
gives exactly what decoding record by record and stacking gives; the writer compresses."""
import os

import numpy as np
import pytest

from reed_jax.data import pipeline, records


def _schema():
    return records.Schema((records.Field("moments", (2, 2, 4), "float32"), records.Field("label", (), "int32"),
                           records.Field("index", (), "int64"), records.Field("target/tok", (3, 5), "bfloat16"),
                           records.Field("pixels", (4, 4, 3), "uint8")))


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"moments": rng.normal(size=(2, 2, 4)).astype(np.float32), "label": np.int32(i % 7),
             "index": np.int64(1000 + i), "target/tok": rng.normal(size=(3, 5)).astype(records.np_dtype("bfloat16")),
             "pixels": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)} for i in range(n)]


def _assert_batches_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k].view(np.uint8), b[k].view(np.uint8), err_msg=k)


def test_decode_batch_equals_stacked_decode():
    schema, ex = _schema(), _examples(5)
    raws = [records.encode(schema, e) for e in ex]
    stacked = {f: np.stack([records.decode(schema, r)[f] for r in raws]) for f in schema.names}
    _assert_batches_equal(records.decode_batch(schema, raws), stacked)
    np.testing.assert_array_equal(records.decode_batch(schema, raws)["index"], 1000 + np.arange(5))
    with pytest.raises(records.DataError, match="record 1 of the batch has"):
        records.decode_batch(schema, [raws[0], raws[1][:-1]])


def _shards(tmp_path, ex, schema, k=2):
    rows = records.write_split(str(tmp_path), "train", schema, ex, k)
    records.write_manifest(str(tmp_path), schema, rows)
    return pipeline.open_split(str(tmp_path), "train")


def test_read_batch_and_global_batches_match_record_by_record(tmp_path):
    schema, ex = _schema(), _examples(12)
    src = _shards(tmp_path, ex, schema)
    idx = [11, 0, 6, 5, 3]  # across both shard files, out of order
    _assert_batches_equal(src.read_batch(idx), {f: np.stack([src[i][f] for i in idx]) for f in schema.names})
    # GlobalBatches over the shards (batched read) == over the decoded records (the per-record path)
    a = pipeline.GlobalBatches(src, 4, seed=3, shard_index=1, shard_count=2)
    b = pipeline.GlobalBatches([records.decode(schema, records.encode(schema, e)) for e in ex], 4, seed=3,
                               shard_index=1, shard_count=2)
    for _ in range(4):  # past an epoch boundary (3 global batches per epoch)
        _assert_batches_equal(next(a), next(b))


def test_read_batch_names_the_bad_record(tmp_path):
    schema, ex = _schema(), _examples(4)
    src = _shards(tmp_path, ex, schema, k=1)
    good = records.encode(schema, ex[0])

    class Short:  # a file whose record 2 is a byte short
        def __getitem__(self, i):
            return good[:-1] if i == 2 else good

    src._files[0] = Short()
    with pytest.raises(records.DataError, match=r"train-00000-of-00001.array_record: record 2 cannot be decoded"):
        src.read_batch([0, 2, 1])


def test_writer_compresses_compressible_records(tmp_path):
    schema = records.Schema((records.Field("x", (4096,), "float32"),))
    ex = [{"x": np.full(4096, float(i), np.float32)} for i in range(64)]
    records.write_shard(str(tmp_path), "a.array_record", schema, ex)
    assert os.path.getsize(tmp_path / "a.array_record") < 0.5 * 64 * schema.record_bytes  # 1 MiB raw
    rows = [records.manifest_row(str(tmp_path), "a.array_record", "train", 64)]
    records.write_manifest(str(tmp_path), schema, rows)
    np.testing.assert_array_equal(pipeline.open_split(str(tmp_path), "train").read_batch([7])["x"][0], 7.0)


def test_threaded_read_batch_equals_one_thread_and_names_bad_record(tmp_path):
    schema, ex = _schema(), _examples(40)
    src = _shards(tmp_path, ex, schema, k=3)
    idx = list(np.random.default_rng(1).permutation(40)[:33])
    one = src.read_batch(idx, threads=1)
    _assert_batches_equal(one, {f: np.stack([src[i][f] for i in idx]) for f in schema.names})
    _assert_batches_equal(src.read_batch(idx, threads=3), one)  # 3 runs of 11 rows
    good = records.encode(schema, ex[0])

    class Short:  # record 5 of the last file is a byte short
        def __getitem__(self, i):
            return good[:-1] if i == 5 else good

    src._files[2] = Short()
    bad = src._ends[1] + 5  # global index of that record, read by the third thread
    with pytest.raises(records.DataError, match=r"train-00002-of-00003.array_record: record 5 cannot be decoded"):
        src.read_batch(list(range(22)) + [bad] + list(range(10)), threads=3)
