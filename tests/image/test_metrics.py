"""Streaming FID/IS statistics and precision/recall against direct computations (ADM formulas)."""
import numpy as np
import pytest
from scipy import linalg

from reed_jax.image import frechet, metrics


def test_streaming_moments_equal_numpy_cov_across_batches_and_processes():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(301, 16)) * rng.uniform(0.1, 3, 16) + rng.normal(size=16)
    a, b = metrics.Moments(16), metrics.Moments(16)
    for chunk in np.split(f[:200], [17, 90]):
        a.update(chunk.astype(np.float32))
    b.update(f[200:].astype(np.float32))
    mu, sigma = metrics.Moments.from_state(a.state()).merge(b).stats()
    f32 = f.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"expected \[N, 16\]"):
        a.update(np.zeros((3, 15)))


def direct_fid(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_direct_formula_and_survives_singular_covariances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 8)), rng.normal(size=(400, 8)) * 1.3 + 0.2
    fid = metrics.fid_from_moments(metrics.Moments(8).update(x), *frechet.statistics(y))
    assert fid == pytest.approx(direct_fid(x, y), rel=1e-6)
    assert metrics.fid_from_moments(metrics.Moments(8).update(x), *frechet.statistics(x)) == pytest.approx(0, abs=1e-6)
    # fewer samples than dimensions: rank-deficient covariances, the product is singular
    lo_x, lo_y = rng.normal(size=(5, 12)), rng.normal(size=(6, 12))
    fid = frechet.frechet_distance(*frechet.statistics(lo_x), *frechet.statistics(lo_y))
    assert np.isfinite(fid) and fid > 0
    eps = 1e-6 * np.eye(12)
    (m1, s1), (m2, s2) = frechet.statistics(lo_x), frechet.statistics(lo_y)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm((s1 + eps) @ (s2 + eps)).real)
    assert fid == pytest.approx(ref, rel=1e-3)


def test_eigh_frechet_equals_the_sqrtm_protocol():
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(64, 64))
    x, y = rng.normal(size=(300, 64)) @ mix, rng.normal(size=(250, 64)) @ mix * 0.7 + 0.3
    stats = (*frechet.statistics(x), *frechet.statistics(y))
    a, b = frechet.frechet_distance(*stats), frechet.frechet_distance(*stats, method="eigh")
    assert b == pytest.approx(a, rel=1e-10) and a == pytest.approx(direct_fid(x, y), rel=1e-10)
    lo = (*frechet.statistics(x[:20]), *frechet.statistics(y[:30]))  # rank-deficient
    assert frechet.frechet_distance(*lo, method="eigh") == pytest.approx(frechet.frechet_distance(*lo), rel=1e-5)
    with pytest.raises(ValueError, match="'svd'"):
        frechet.frechet_distance(*stats, method="svd")


def test_streaming_inception_score_equals_adm_formula():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(23, 10)) * 3
    ref = metrics.inception_score_reference(logits, split_size=7)
    a, b = metrics.InceptionScore(10, split_size=7), metrics.InceptionScore(10, split_size=7)
    a.update(logits[:5], 0).update(logits[5:12], 5)  # batches straddle split boundaries
    b.update(logits[12:], 12)  # another process's samples
    assert a.merge(b).score() == pytest.approx(ref, rel=1e-12)
    assert 1.0 < ref < 10.0
    # all samples the same confident class: IS = 1; uniform over 10 confident classes: IS -> 10
    same = np.tile(np.eye(10)[3] * 50, (20, 1))
    assert metrics.inception_score_reference(same, 20) == pytest.approx(1.0, abs=1e-6)
    spread = np.eye(10)[np.arange(20) % 10] * 50
    assert metrics.inception_score_reference(spread, 20) == pytest.approx(10.0, rel=1e-6)


def brute_pr(ref, samples, k=3):
    d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
    r_ref = np.sort(d(ref, ref), 1)[:, k]
    r_s = np.sort(d(samples, samples), 1)[:, k]
    precision = (d(samples, ref) <= r_ref[None]).any(1).mean()
    recall = (d(ref, samples) <= r_s[None]).any(1).mean()
    return precision, recall


@pytest.mark.parametrize("scale", [1.0, 300.0])  # 300: float16 distances overflow, float32 fallback
def test_precision_recall_match_brute_force_nearest_neighbours(scale):
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(150, 6)) * scale
    samples = (rng.normal(size=(120, 6)) * 1.5 + 1.0) * scale
    want = brute_pr(ref, samples)
    got = metrics.ManifoldPR(k=3)(ref, samples)
    blocked = metrics.ManifoldPR(k=3, block=40)(ref, samples)
    assert got == blocked  # blocking does not change the result
    np.testing.assert_allclose(got, want, atol=0.02)  # float16 distances may flip a borderline point
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


# ------------------------------------------------------------- known answers (values, not ranges)
@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_known_answers(method):
    """FD(X, X) = 0; FD(X, X + c) = |c|^2 (same covariance); FD(X, 2X) with mean 0 = tr(S)
    (sqrt(S 4S) = 2S, so tr(S + 4S - 4S))."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    x -= x.mean(0)
    c = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.25])
    m, s = frechet.statistics(x)
    fd = lambda a, b: frechet.frechet_distance(*frechet.statistics(a), *frechet.statistics(b), method=method)
    assert fd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert fd(x, x + c) == pytest.approx(float(c @ c), rel=1e-9)
    assert fd(x, 2 * x) == pytest.approx(float(np.trace(s)), rel=1e-9)
    assert fd(2 * x + c, x) == pytest.approx(float(c @ c + np.trace(s)), rel=1e-9)


def test_inception_score_protocol_defaults_known_answer():
    """The protocol's IS (1008 logits, splits of 5,000 consecutive samples, mean over splits):
    5,000 confident predictions uniform over 10 classes (IS 10) then 6 of one class (IS 1) -> 5.5.
    One split over all 5,006 would give ~10; splits of another size another value."""
    labels = np.concatenate([np.arange(5000) % 10, np.full(6, 7)])
    logits = np.zeros((5006, 1008), np.float32)
    logits[np.arange(5006), labels] = 60.0
    is_ = metrics.InceptionScore()
    for i in range(0, 5006, 1000):  # streamed in batches that do not line up with the splits
        is_.update(logits[i:i + 1000], i)
    assert is_.score() == pytest.approx(5.5, rel=1e-12)
    assert metrics.inception_score_reference(logits) == pytest.approx(5.5, rel=1e-12)


def test_precision_recall_known_answers():
    """Identical sets: (1, 1). Disjoint far-apart sets: (0, 0). Samples = the reference cluster plus
    as many isolated far points: precision 0.5 (half the samples off the reference manifold), recall 1
    (the far points' k-NN radii cover the cluster): the order (precision, recall) is pinned."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(10, 4))
    pr = metrics.ManifoldPR(k=3)
    assert pr(ref, ref) == (1.0, 1.0)
    assert pr(ref, ref + 1e3) == (0.0, 0.0)
    far = 100.0 * np.eye(4)[np.arange(10) % 4] * (1 + np.arange(10)[:, None])  # isolated, mutually distant
    assert pr(ref, np.concatenate([ref, far])) == (0.5, 1.0)
    assert pr(np.concatenate([ref, far]), ref) == (1.0, 0.5)


def test_digits_fd_and_accuracy_against_a_numpy_transcription():
    """docs/images.md's digits-FD and sample accuracy: DigitsFDNet features (numpy transcription of its
    Dense-GELU(tanh)-Dense-GELU(tanh) trunk and logits head) -> ADM's Frechet formula with scipy sqrtm
    against the real set; accuracy = argmax(logits) == conditioning label. Known answers: the real
    set scores FD 0; half right labels score accuracy 0.5; out-of-range pixels are clipped first."""
    import jax
    from scipy import linalg

    from reed_jax.image import digits
    from reed_jax.image.digits_fd import DigitsScorer
    from reed_jax.models.encoders.digits import DigitsFDNet

    real = digits.load()[0][:300]
    params = jax.tree.map(np.asarray, DigitsFDNet().init(jax.random.PRNGKey(0), real[:1])["params"])
    gelu = lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))
    dense = lambda a, p: a @ p["kernel"].astype(np.float64) + p["bias"]

    def net(x):
        f = gelu(dense(gelu(dense(np.clip(x, -1, 1).reshape(len(x), -1).astype(np.float64), params["Dense_0"])),
                       params["Dense_1"]))
        return f, dense(f, params["Dense_2"])

    def fd(a, b):
        m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))

    scorer = DigitsScorer(params, real)
    rng = np.random.default_rng(0)
    samples = np.clip(real[:120] + rng.normal(size=(120, 8, 8, 1)) * 0.4, -1, 1).astype(np.float32)
    feats, logits = net(samples)
    pred = logits.argmax(-1)
    labels = np.where(np.arange(120) % 2 == 0, pred, (pred + 1) % 10)  # every other label wrong
    got = scorer(samples, labels)
    assert got["accuracy"] == 0.5
    assert got["digits_fd"] == pytest.approx(fd(feats, net(real)[0]), rel=1e-4)
    assert got["digits_fd"] > 0.01
    assert scorer(real, digits.load()[1][:300])["digits_fd"] == pytest.approx(0.0, abs=1e-6)
    wide = samples * 3  # out of [-1, 1]: clipped before the network
    assert scorer(wide, labels) == scorer(np.clip(wide, -1, 1), labels)
