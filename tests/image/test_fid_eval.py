"""--mode=evaluate end to end on the digits (random Inception weights): metrics, resume, inputs."""
import json
import os

import numpy as np
import pytest
from conftest import load_config, tiny_config

from reed_jax import modes, train
from reed_jax.image import digits, fid_eval, inception

SIZE = 75  # the protocol's 299 costs 16x more; the pipeline is the same


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fid")
    params = inception.init_params(0, size=75)
    path = str(d / "inception.npz")
    fid_eval.save_inception_params(params, path)
    extractor = fid_eval.Extractor(fid_eval.load_inception_params(path), batch_size=8, size=SIZE)
    ref_images = fid_eval.to_rgb_uint8(digits.load()[0][:32])
    ref_path = str(d / "ref.npz")
    ref = fid_eval.write_reference(ref_images, ref_path, extractor)
    return path, ref_path, ref


def test_evaluate_mode_metrics_resume_and_npz(digits_shards, tmp_path, eval_inputs):
    inception_path, ref_path, ref = eval_inputs
    c = tiny_config("reed")
    c.data.dir = digits_shards
    c.train.update(steps=2, eval_every=2, checkpoint_every=2)
    c.eval.update(inception_path=inception_path, reference=ref_path, fid_samples=20, fid_batch_size=8,
                  inception_batch_size=8, inception_size=SIZE, save_npz=True, fid_every=2, fid_every_samples=20,
                  frechet_method="eigh")  # sqrtm == eigh is tested in test_metrics
    train.train_and_evaluate(c, str(tmp_path), log=lambda *_: None)  # in-training FID at step 2 (same batches)
    logs = []
    r = modes.evaluate_mode(c, str(tmp_path), log=logs.append)
    assert any("3 of 3 batches already done" in m for m in logs)  # written by the in-training evaluation
    assert r["num_samples"] == 20 and r["fid"] > 0 and r["sfid"] > 0 and r["inception_score"] >= 1.0
    assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
    out = os.path.join(tmp_path, "eval", r["tag"])
    batches = sorted(os.listdir(os.path.join(out, "batches")))
    assert batches == ["batch_00000.npz", "batch_00001.npz", "batch_00002.npz"]  # ceil(20 / 8)
    with open(os.path.join(out, "metrics.json")) as fh:
        assert json.load(fh)["fid"] == pytest.approx(r["fid"])
    with open(os.path.join(tmp_path, "eval", f"evaluate_{r['step']:07d}.json")) as fh:  # every track's layout
        assert json.load(fh)["fid"] == pytest.approx(r["fid"])
    arr = np.load(os.path.join(out, "samples.npz"))["arr_0"]
    assert arr.shape == (20, 8, 8, 3) and arr.dtype == np.uint8
    # the metrics are those of the saved samples, computed directly
    f = fid_eval.Extractor(fid_eval.load_inception_params(inception_path), 8, SIZE)(arr)
    from reed_jax.image import frechet
    assert r["fid"] == pytest.approx(frechet.frechet_distance(*frechet.statistics(f["pool_3"]), ref["mu"], ref["sigma"],
                                                                    method="eigh"), rel=1e-6)
    # a killed run resumes: remove one batch, corrupt another; the rerun recomputes exactly those
    os.remove(os.path.join(out, "batches", "batch_00001.npz"))
    with open(os.path.join(out, "batches", "batch_00002.npz"), "wb") as fh:
        fh.write(b"half-written")
    logs = []
    r2 = modes.evaluate_mode(c, str(tmp_path), log=logs.append)
    assert any("1 of 3 batches already done" in m for m in logs)
    assert r2["fid"] == pytest.approx(r["fid"], rel=1e-9)  # same seeds per batch: same images
    assert r2["precision"] == r["precision"] and r2["recall"] == r["recall"]


def test_missing_inputs_are_named_before_compute(tmp_path):
    c = tiny_config("reed")
    with pytest.raises(fid_eval.EvalError, match="eval.inception_path"):
        modes.evaluate_mode(c, str(tmp_path))
    c.eval.inception_path = str(tmp_path / "nope.pth")
    with pytest.raises(fid_eval.EvalError, match="nope.pth"):
        modes.evaluate_mode(c, str(tmp_path))
    bad = tmp_path / "ref.npz"
    np.savez(bad, mu=np.zeros(5), sigma=np.eye(5))
    with pytest.raises(fid_eval.EvalError, match=r"mu has shape \(5,\)"):
        fid_eval.load_reference(str(bad), None, str(tmp_path))


def _batches(d, pool, spatial, logits, size):
    paths = []
    for b, i in enumerate(range(0, len(pool), size)):
        paths.append(str(d / f"batch_{b:05d}.npz"))
        np.savez(paths[-1], pool_3=pool[i:i + size], spatial=spatial[i:i + size], logits=logits[i:i + size])
    return paths


def test_score_known_answers(tmp_path):
    """fid_eval.score on crafted batch files against answers known in closed form: samples equal to
    the reference -> FID 0, sFID 0, precision = recall = 1; samples shifted by c (pool_3) and e
    (spatial) -> FID |c|^2, sFID |e|^2 (covariances unchanged), precision = recall = 0; IS of
    confident predictions uniform over 8 of the 1008 classes = 8. Only the first num_samples
    samples count (the tail past it is garbage)."""
    from reed_jax.image import frechet

    rng = np.random.default_rng(0)
    n, extra = 40, 8
    pool = np.zeros((n + extra, 16), np.float32)  # variance in 4 of 16 dims (the protocol: 2048)
    pool[:, :4] = rng.normal(size=(n + extra, 4)) @ rng.normal(size=(4, 4))
    spatial = rng.normal(size=(n + extra, 5)).astype(np.float32)
    logits = np.zeros((n + extra, 1008), np.float32)
    logits[np.arange(n + extra), np.arange(n + extra) % 8] = 60.0
    pool[n:], spatial[n:] = 1e4, -1e4  # past num_samples: must not be read
    mu, sigma = frechet.statistics(pool[:n])
    mu_s, sigma_s = frechet.statistics(spatial[:n])
    ref = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s, "pool_3": pool[:n]}
    same = fid_eval.score(_batches(tmp_path, pool, spatial, logits, 16), n, ref, frechet_method="eigh")
    assert same["num_samples"] == n
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["sfid"] == pytest.approx(0.0, abs=1e-6)
    assert same["inception_score"] == pytest.approx(8.0, rel=1e-9)
    assert (same["precision"], same["recall"]) == (1.0, 1.0)
    c = np.zeros(16, np.float32)
    c[[0, 3, 10]] = [30.0, -40.0, 120.0]
    e = np.array([3.0, 0.0, -4.0, 0.0, 12.0], np.float32)
    shifted = fid_eval.score(_batches(tmp_path, pool + c, spatial + e, logits, 16), n, ref, frechet_method="eigh")
    assert shifted["fid"] == pytest.approx(float(c @ c), rel=1e-6)  # 900 + 1600 + 14400
    assert shifted["sfid"] == pytest.approx(float(e @ e), rel=1e-6)  # 169
    assert (shifted["precision"], shifted["recall"]) == (0.0, 0.0)
    # half the samples are the reference's own points, half isolated far away: precision 0.5 (samples on
    # the reference manifold), recall 1 (the far points' k-NN radii cover the reference): the order is pinned
    mixed = pool.copy()
    mixed[20:n, :4] = 1e3 * np.eye(4)[np.arange(20) % 4] * (1 + np.arange(20)[:, None])
    r = fid_eval.score(_batches(tmp_path, mixed, spatial, logits, 16), n, ref, frechet_method="eigh")
    assert (r["precision"], r["recall"]) == (0.5, 1.0)
    stats_only = {k: v for k, v in ref.items() if k != "pool_3"}
    r = fid_eval.score(_batches(tmp_path, pool, spatial, logits, 16), n, stats_only, frechet_method="eigh")
    assert r["precision"] is None and r["recall"] is None and r["fid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(fid_eval.EvalError, match=r"reference mu has shape \(3,\); the samples' pool_3 features have 16"):
        fid_eval.score(_batches(tmp_path, pool, spatial, logits, 16), n, dict(ref, mu=np.zeros(3)))


def test_class_balanced_labels_hold_exactly_n_over_c_of_each_class():
    n, c, bs = 60, 10, 8
    batches = [fid_eval.batch_labels(3, b, bs, c, balanced_total=n) for b in range(-(-n // bs))]
    labels = np.concatenate(batches)
    assert labels.dtype == np.int32 and all(len(b) == bs for b in batches)
    assert np.bincount(labels[:n], minlength=c).tolist() == [6] * c  # exactly N / C of each class
    assert (labels[n:] == 0).all()  # the padding past N is never scored
    assert not (np.diff(labels[:n]) >= 0).all()  # shuffled, not sorted by class
    again = np.concatenate([fid_eval.batch_labels(3, b, bs, c, balanced_total=n) for b in range(len(batches))])
    np.testing.assert_array_equal(labels, again)  # deterministic by seed: resumable per batch
    # the default (random labels, the ADM/REPA protocol) is unchanged
    np.testing.assert_array_equal(fid_eval.batch_labels(3, 1, bs, c),
                                  np.random.default_rng([3, 1]).integers(0, c, bs).astype(np.int32))
    with pytest.raises(fid_eval.EvalError, match="61 samples needs a multiple of the 10 classes"):
        fid_eval.batch_labels(3, 0, bs, c, balanced_total=61)


def test_class_balanced_needs_a_multiple_of_the_classes():
    from reed_jax import config as config_lib

    c = load_config("imagenet_sit_xl_2_reed")
    c.eval.class_balanced = True
    config_lib.validate(c)  # 50,000 = 50 x 1,000
    c.eval.fid_samples = 10_001
    with pytest.raises(config_lib.ConfigError, match="eval.class_balanced=True needs eval.fid_samples=10001"):
        config_lib.validate(c)
