import json
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


# ---------------------------------------------------------------- corrupt shards are named (issue 17.11)
def _shard(tmp_path, i=1):
    return str(tmp_path / records.shard_name("train", i, 3))


def test_truncated_shard_is_named_at_start_by_its_size(tmp_path):
    write(tmp_path)
    p = _shard(tmp_path)
    size = os.path.getsize(p)
    with open(p, "r+b") as fh:
        fh.truncate(size - 1)
    _, manifest = records.read_manifest(str(tmp_path))
    # the size check runs even with checksums off: cheap, before any record is read
    with pytest.raises(records.DataError, match=f"{p} has {size - 1} bytes, manifest.json says {size}"):
        records.split_files(str(tmp_path), manifest, "train", checksums="off")
    with pytest.raises(records.DataError, match="train-00001-of-00003.array_record has"):
        pipeline.make_loader(str(tmp_path), "train", 4, seed=0)


def _flip(path, pos):
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0x01]))


def test_bit_flipped_shard_is_named_by_checksum_or_by_the_reader(tmp_path):
    write(tmp_path)
    p = _shard(tmp_path)
    _, manifest = records.read_manifest(str(tmp_path))
    records.split_files(str(tmp_path), manifest, "train", checksums="on")  # intact: passes
    _flip(p, 100)  # inside the first chunk's header (same size, new content)
    for mode in ("on", "auto"):  # auto: 3 tiny shards are far below AUTO_CHECKSUM_BYTES
        with pytest.raises(records.DataError, match=f"shard file {p} does not match its sha256"):
            records.split_files(str(tmp_path), manifest, "train", checksums=mode)
    assert records.split_files(str(tmp_path), manifest, "train", checksums="off")[1] == 30
    # checksums off: the flip still surfaces with the file's name, never as a bare riegeli error
    with pytest.raises(records.DataError, match=f"shard file {p}"):
        pipeline.read_all(str(tmp_path), "train", checksums="off")
    with pytest.raises(records.DataError, match="data.verify_checksums='sometimes' must be one of"):
        records.split_files(str(tmp_path), manifest, "train", checksums="sometimes")


def test_checksum_auto_skips_large_splits(tmp_path, monkeypatch):
    write(tmp_path)
    _flip(_shard(tmp_path), 100)
    _, manifest = records.read_manifest(str(tmp_path))
    total = sum(os.path.getsize(_shard(tmp_path, i)) for i in range(3))
    monkeypatch.setattr(records, "AUTO_CHECKSUM_BYTES", total - 1)
    records.split_files(str(tmp_path), manifest, "train", checksums="auto")  # too big to hash: size only
    monkeypatch.setattr(records, "AUTO_CHECKSUM_BYTES", total)
    with pytest.raises(records.DataError, match="does not match its sha256"):
        records.split_files(str(tmp_path), manifest, "train", checksums="auto")


def test_undecodable_record_names_file_and_record(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    ex, schema = write(tmp_path)
    p = _shard(tmp_path, 2)
    good = [records.encode(schema, e) for e in ex[20:30]]
    w = ArrayRecordWriter(p, "group_size:1")
    for i, raw in enumerate(good):
        w.write(raw[:-3] if i == 6 else raw)  # record 6 of the third shard is 3 bytes short
    w.close()
    _, manifest = records.read_manifest(str(tmp_path))
    rows = [r if r["file"] != os.path.basename(p) else records.manifest_row(str(tmp_path), r["file"], "train", 10)
            for r in manifest["shards"]]
    records.write_manifest(str(tmp_path), schema, rows)  # size and sha256 agree: only decoding can find it
    with pytest.raises(records.DataError, match=f"shard file {p}: record 6 cannot be decoded: record of 121 bytes"):
        pipeline.read_all(str(tmp_path), "train")
    src = pipeline.open_split(str(tmp_path), "train")
    assert src.locate(26) == (p, 6) and src.locate(9) == (_shard(tmp_path, 0), 9)
    np.testing.assert_array_equal(src[25]["image"], ex[25]["image"])
    it = iter(pipeline.make_loader(str(tmp_path), "train", 30, seed=0))
    with pytest.raises(records.DataError, match="record 6 cannot be decoded"):
        next(it)


def test_manifest_count_mismatch_is_named_per_file(tmp_path):
    _, schema = write(tmp_path)
    _, manifest = records.read_manifest(str(tmp_path))
    manifest["shards"][1]["count"] = 11
    records.write_manifest(str(tmp_path), schema, manifest["shards"])
    with pytest.raises(records.DataError, match=f"shard file {_shard(tmp_path)} holds 10 records, manifest.json says 11"):
        pipeline.make_loader(str(tmp_path), "train", 4, seed=0)


def test_schema_version_is_checked(tmp_path):
    _, schema = write(tmp_path)
    with open(tmp_path / records.SCHEMA_FILE, "w") as fh:
        json.dump(dict(schema.to_json(), version=records.SCHEMA_VERSION + 1), fh)
    with pytest.raises(records.DataError, match=f"shard schema version {records.SCHEMA_VERSION + 1} is not supported "
                                                f"\\(this code reads {records.SCHEMA_VERSION}\\)"):
        records.read_manifest(str(tmp_path))
    with pytest.raises(records.DataError, match="schema version"):
        pipeline.make_loader(str(tmp_path), "train", 4, seed=0)


def test_existing_shards_are_kept_only_when_identical(tmp_path):
    assert records.matching_shards(str(tmp_path), records.Schema.of(examples(1)[0]), {"train": 30}) is False
    ex, schema = write(tmp_path)
    before = {f: os.path.getmtime(tmp_path / f) for f in os.listdir(tmp_path)}
    assert records.matching_shards(str(tmp_path), schema, {"train": 30}) is True
    other = records.Schema.of(dict(ex[0], label=np.int64(0)))  # one field's dtype differs
    for s, counts in ((other, {"train": 30}), (schema, {"train": 31}), (schema, {"train": 30, "val": 2})):
        with pytest.raises(records.DataError, match="already holds different shards .* not overwritten"):
            records.matching_shards(str(tmp_path), s, counts)
    assert {f: os.path.getmtime(tmp_path / f) for f in os.listdir(tmp_path)} == before


def test_trainer_start_names_a_corrupt_shard(tmp_path):
    """The trainer's start-up check (train.check_data, before any compute) hashes small splits."""
    from conftest import tiny_config

    from reed_jax import train

    write(tmp_path)
    _flip(_shard(tmp_path), 100)
    with pytest.raises(records.DataError, match=f"shard file {_shard(tmp_path)} does not match its sha256"):
        train.check_data(tiny_config(), str(tmp_path))


def test_shard_source_keeps_grains_identity_for_saved_iterator_states(tmp_path):
    """Iterator states checkpointed before ShardSource carry grain's ArrayRecordDataSource repr, which
    DataLoader.set_state compares: the repr is unchanged, so those runs still resume."""
    import grain

    write(tmp_path)
    paths = [_shard(tmp_path, i) for i in range(3)]
    assert repr(pipeline.open_split(str(tmp_path), "train")) == repr(grain.sources.ArrayRecordDataSource(paths))


def test_manifests_without_sizes_still_load(tmp_path):
    """Shards precomputed before sizes were recorded: no size check, the sha256 still applies."""
    ex, schema = write(tmp_path)
    _, manifest = records.read_manifest(str(tmp_path))
    records.write_manifest(str(tmp_path), schema, [{k: v for k, v in r.items() if k != "bytes"}
                                                   for r in manifest["shards"]])
    np.testing.assert_array_equal(pipeline.read_all(str(tmp_path), "train")["index"], np.arange(30))
    with open(_shard(tmp_path), "ab") as fh:
        fh.write(b"\0")
    _, old = records.read_manifest(str(tmp_path))
    assert records.split_files(str(tmp_path), old, "train", checksums="off")[1] == 30
    with pytest.raises(records.DataError, match="does not match its sha256"):
        records.split_files(str(tmp_path), old, "train", checksums="auto")
