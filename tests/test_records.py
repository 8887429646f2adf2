import os

import numpy as np
import pytest

from reed_jax.data import pipeline, records


def examples(n=30):
    rng = np.random.default_rng(0)
    return [{"image": rng.normal(size=(4, 4, 1)).astype(np.float32), "label": np.int32(i % 3),
             "index": np.int64(i), "target/tok": rng.normal(size=(4, 6)).astype(np.float16)} for i in range(n)]


def write(tmp_path, n=30, shards=3):
    ex = examples(n)
    schema = records.Schema.of(ex[0])
    rows = records.write_split(str(tmp_path), "train", schema, ex, shards)
    records.write_manifest(str(tmp_path), schema, rows)
    return ex, schema


def test_round_trip_and_manifest(tmp_path):
    ex, schema = write(tmp_path)
    assert schema.field("target/tok").dtype == "float16"
    got = pipeline.read_all(str(tmp_path), "train")
    for k in ex[0]:
        np.testing.assert_array_equal(got[k], np.stack([e[k] for e in ex]))
        assert got[k].dtype == ex[0][k].dtype
    schema2, manifest = records.read_manifest(str(tmp_path))
    assert schema2 == schema and sum(r["count"] for r in manifest["shards"]) == 30
    assert all(len(r["sha256"]) == 64 for r in manifest["shards"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_encoding_is_plain_bytes_and_checked():
    ex = examples(1)[0]
    schema = records.Schema.of(ex)
    raw = records.encode(schema, ex)
    assert len(raw) == 16 * 4 + 4 + 8 + 24 * 2
    assert raw[:4] == np.float32(ex["image"].ravel()[0]).tobytes()
    with pytest.raises(records.DataError, match="does not match the schema"):
        records.decode(schema, raw[:-1])
    with pytest.raises(records.DataError, match="'image': shape"):
        records.encode(schema, dict(ex, image=np.zeros((4, 4, 2))))


def test_loader_is_deterministic_batched_and_resumable(tmp_path):
    write(tmp_path)
    a = iter(pipeline.make_loader(str(tmp_path), "train", 8, seed=3))
    first = [next(a)["index"] for _ in range(3)]
    assert first[0].shape == (8,)
    b = iter(pipeline.make_loader(str(tmp_path), "train", 8, seed=3))
    np.testing.assert_array_equal(next(b)["index"], first[0])
    state = b.get_state()
    c = iter(pipeline.make_loader(str(tmp_path), "train", 8, seed=3))
    c.set_state(state)
    np.testing.assert_array_equal(next(c)["index"], first[1])
    # repeats across epochs: 10 batches of 8 from 30 records
    seen = np.concatenate([next(a)["index"] for _ in range(10)])
    assert set(seen) == set(range(30))
    # per-process shards are disjoint
    p0 = next(iter(pipeline.make_loader(str(tmp_path), "train", 5, seed=0, shard_index=0, shard_count=2)))
    p1 = next(iter(pipeline.make_loader(str(tmp_path), "train", 5, seed=0, shard_index=1, shard_count=2)))
    assert not set(p0["index"]) & set(p1["index"])


def test_missing_and_bad_shards_are_named(tmp_path):
    with pytest.raises(records.DataError, match="does not exist"):
        records.read_manifest(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(records.DataError, match="no schema.json"):
        records.read_manifest(str(tmp_path / "empty"))
    write(tmp_path)
    os.remove(tmp_path / records.shard_name("train", 1, 3))
    with pytest.raises(records.DataError, match="train-00001-of-00003.array_record"):
        pipeline.make_loader(str(tmp_path), "train", 4, seed=0)
    with pytest.raises(records.DataError, match="no records for split 'val'"):
        pipeline.make_loader(str(tmp_path), "val", 4, seed=0)


def test_check_targets_names_the_shape(tmp_path):
    _, schema = write(tmp_path)
    records.check_targets(schema, {"tok": (4, 6)}, "d")
    with pytest.raises(records.DataError, match=r"targets.tok: config expects features of shape \(4, 7\)"):
        records.check_targets(schema, {"tok": (4, 7)}, "d")
    with pytest.raises(records.DataError, match="no field 'target/other'"):
        records.check_targets(schema, {"other": (3,)}, "d")
