"""Protein track: featurisation, ProteinMPNN parity with colabdesign, invariances, masked diffusion."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.convert import joblib_file, proteinmpnn
from reed_jax.protein import features, masked_diffusion, model as pmodel, mpnn, residues, teacher

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def test_colabdesign_proteinmpnn_parity():
    """Weights in colabdesign's joblib layout -> our reader + converter + MPNN == colabdesign's haiku logits
    (tools/make_proteinmpnn_fixture.py; all-visible decoding order, native sequence)."""
    model, params = teacher.load(os.path.join(FIX, "proteinmpnn_tiny.pkl"))
    assert (model.k, model.hidden, model.encoder_layers, model.decoder_layers, model.vocab) == (8, 16, 3, 3, 21)
    f = np.load(os.path.join(FIX, "proteinmpnn_tiny.npz"))
    n = len(f["S"])
    logits, _ = model.apply({"params": params}, f["X"][None], np.ones((1, n), np.float32), np.arange(n)[None],
                            f["S"][None])
    np.testing.assert_allclose(np.asarray(logits[0]), f["logits"], atol=1e-4)
    assert np.abs(np.asarray(logits[0]) - f["logits"]).max() < 1e-5


def test_virtual_cb_knn_rbf_and_offsets_by_hand():
    # an ideal residue: N at the origin, CA 1.46 A along x, C in the xy plane
    res = np.array([[0, 0, 0], [1.46, 0, 0], [2.0, 1.42, 0], [3.2, 1.6, 0]], np.float32)
    cb = np.asarray(features.virtual_cb(jnp.asarray(res)))
    b, c = res[1] - res[0], res[2] - res[1]
    np.testing.assert_allclose(cb, -0.58273431 * np.cross(b, c) + 0.56802827 * b - 0.54067466 * c + res[1], atol=1e-6)
    assert 1.4 < np.linalg.norm(cb - res[1]) < 1.6  # a C-beta sits ~1.5 A from its C-alpha
    ca = jnp.asarray([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0], [50, 0, 0]]])
    idx = np.asarray(features.knn(ca, jnp.asarray([[1.0, 1, 1, 1, 0]]), 3))[0]
    np.testing.assert_array_equal(idx[:4], [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]])  # itself first; padding never
    r = np.asarray(features.rbf(jnp.asarray([2.0, 22.0])))
    assert r.shape == (2, 16) and r[0, 0] == pytest.approx(1.0) and r[1, -1] == pytest.approx(1.0)
    assert r[0, 1] == pytest.approx(np.exp(-(((22 - 2) / 15) / 1.25) ** 2))
    e_idx = jnp.asarray([[[0, 1, 2], [1, 0, 2], [2, 1, 0]]])
    off = np.asarray(features.relative_offsets(jnp.asarray([[0, 1, 100]]), e_idx))
    np.testing.assert_array_equal(off[0], [[32, 31, 0], [32, 33, 0], [32, 64, 64]])  # clipped at +-32


def random_chain(rng, n):
    steps = rng.normal(size=(n, 3))
    ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), 0)
    return (ca[:, None] + rng.normal(0, 1.0, (n, 4, 3))).astype(np.float32)


def tiny_model(**kw):
    return mpnn.MPNN(hidden=16, k=6, dropout=0.0, backbone_noise=0.0, **kw)


def test_outputs_invariant_to_rotation_translation_and_padding():
    rng = np.random.default_rng(0)
    n, pad = 12, 5
    x = random_chain(rng, n)
    tok = rng.integers(0, 22, n)
    m = tiny_model()
    args = lambda xx, nn_: (xx[None], np.ones((1, nn_), np.float32), np.arange(nn_)[None], tok[None, :nn_])
    p = m.init(jax.random.PRNGKey(0), *args(x, n))["params"]
    lo, taps = m.apply({"params": p}, *args(x, n))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))  # a proper rotation
    lo2, taps2 = m.apply({"params": p}, *args((x @ q.T + np.array([5.0, -3, 20])).astype(np.float32), n))
    np.testing.assert_allclose(lo2, lo, atol=2e-4)
    np.testing.assert_allclose(taps2["decoder_edges"], taps["decoder_edges"], atol=2e-4)
    # the same chain padded with 5 empty residues: identical outputs on the real ones
    xp = np.concatenate([x, np.zeros((pad, 4, 3), np.float32)])
    lo3, _ = m.apply({"params": p}, xp[None], np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)[None],
                     np.arange(n + pad)[None], np.r_[tok, np.full(pad, residues.X)][None])
    np.testing.assert_allclose(lo3[:, :n], lo, atol=2e-5)
    # and the decoder reads the tokens: changing one residue's token changes its neighbours' logits
    tok2 = tok.copy()
    tok2[3] = (tok[3] + 1) % 20
    lo4, _ = m.apply({"params": p}, x[None], np.ones((1, n), np.float32), np.arange(n)[None], tok2[None])
    assert float(jnp.abs(lo4 - lo).max()) > 1e-4


def test_corruption_loss_and_sampler():
    rng = jax.random.PRNGKey(0)
    tokens = jnp.tile(jnp.arange(20), (400, 5))  # [400, 100]
    mask = jnp.ones_like(tokens, jnp.float32).at[:, 90:].set(0)
    noisy, t, hidden = masked_diffusion.corrupt(rng, tokens, mask, 0.01, 0.99)
    assert not bool(hidden[:, 90:].any()) and bool(jnp.all(noisy[:, 90:] == tokens[:, 90:]))
    frac = hidden[:, :90].mean(1)
    assert float(jnp.abs(frac - (1 - t)).mean()) < 0.05  # masked with probability 1 - t
    assert bool(jnp.all((noisy == residues.MASK) == hidden))
    # label smoothing by hand: C = 21, eps = 0.1
    logits = jax.random.normal(rng, (2, 3, 21))
    y = jnp.array([[0, 5, 20], [1, 2, 3]])
    q = (np.eye(21)[np.asarray(y)] + 0.1 / 21) / 1.1
    want = -(q * np.asarray(jax.nn.log_softmax(logits))).sum(-1)
    np.testing.assert_allclose(masked_diffusion.smoothed_cross_entropy(logits, y, 0.1), want, rtol=1e-6)
    # sampler: a fixed preference, every real residue unmasked, argmax of the last prediction, X excluded
    pref = jax.nn.one_hot(jnp.arange(7) % 20, 21) * 5.0 + jax.nn.one_hot(jnp.full(7, residues.X), 21) * 9.0
    seen = []

    def logits_fn(tok):
        seen.append(tok)
        return jnp.broadcast_to(pref, tok.shape + (21,))

    m = jnp.array([[1, 1, 1, 1, 1, 0, 0]], jnp.float32)
    out = masked_diffusion.sample(logits_fn, rng, m, num_steps=5, temperature=0.1)
    np.testing.assert_array_equal(out[0], [0, 1, 2, 3, 4, residues.X, residues.X])
    out_x = masked_diffusion.sample(logits_fn, rng, m, num_steps=5, temperature=0.1, allow_x=True)
    assert bool(jnp.all(out_x[0, :5] == residues.X))  # X allowed: it has the top logit


def test_edge_targets_gather_at_model_edges_and_standardize():
    rng = np.random.default_rng(1)
    t_idx = np.stack([rng.permutation(6)[:4] for _ in range(6)])[None]  # teacher's 4 edges per residue
    target = rng.normal(size=(1, 6, 4, 3)).astype(np.float32)
    e_idx = np.stack([np.r_[t_idx[0, i, [2, 0]], [x for x in range(6) if x not in t_idx[0, i]][:1]]
                      for i in range(6)])[None]  # two edges the teacher has, one it lacks
    got, found = pmodel.gather_edge_target(jnp.asarray(target), jnp.asarray(t_idx), jnp.asarray(e_idx))
    np.testing.assert_array_equal(found[0], np.tile([True, True, False], (6, 1)))
    np.testing.assert_allclose(got[0, :, 0], target[0, :, 2])
    np.testing.assert_allclose(got[0, :, 1], target[0, :, 0])
    x = jnp.asarray(rng.normal(3.0, 2.0, (2, 5, 4)), jnp.float32)
    valid = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
    z = np.asarray(pmodel.standardize(x, valid))[np.asarray(valid)]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_joblib_reader_matches_joblib_and_refuses_code(tmp_path):
    import pickle

    import joblib

    obj = {"num_edges": 48, "noise_level": 0.2, "model_state_dict": {
        "m/~/a": {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.float64(2.5) * np.ones(2)},
        "m/~/f": {"w": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)), "s": np.zeros((), np.float32)}}}
    joblib.dump(obj, tmp_path / "w.pkl")
    got = joblib_file.load(str(tmp_path / "w.pkl"))
    assert got["num_edges"] == 48 and got["noise_level"] == 0.2
    for m, ps in obj["model_state_dict"].items():
        for k, v in ps.items():
            np.testing.assert_array_equal(got["model_state_dict"][m][k], v)
            assert got["model_state_dict"][m][k].dtype == v.dtype and got["model_state_dict"][m][k].shape == v.shape

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(joblib_file.JoblibFileError, match="refusing to load posix.system|refusing to load os.system"):
        joblib_file.load(str(tmp_path / "evil.pkl"))


def test_converter_errors_name_the_key():
    sd = proteinmpnn.flatten_colabdesign(joblib_file.load(os.path.join(FIX, "proteinmpnn_tiny.pkl")))
    sd["protein_mpnn/~/mystery/w"] = np.zeros(3)
    with pytest.raises(proteinmpnn.ConversionError, match="mystery"):
        proteinmpnn.from_colabdesign(sd)
    model, params = teacher.load(os.path.join(FIX, "proteinmpnn_tiny.pkl"))
    params["enc0"]["W1"]["kernel"] = np.zeros((3, 3))
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 20, 4, 3), np.float32),
                                                 np.ones((1, 20)), np.zeros((1, 20), np.int32),
                                                 np.zeros((1, 20), np.int32))["params"])
    with pytest.raises(proteinmpnn.ConversionError, match=r"enc0/W1/kernel: shape \(3, 3\)"):
        proteinmpnn.check_shapes(params, expected)


def test_tiny_overfit_two_chains():
    """The shared train step with the protein losses memorises two sequences given their backbones."""
    from reed_jax import config as config_lib, train

    c = config_lib.protein_config("base")
    c.model.update(hidden=32)
    c.protein.update(max_length=24, k=8, enc_layers=2, dec_layers=2, dropout=0.0, backbone_noise=0.0)
    c.optim.update(lr=3e-3, ema_decay=0.0)
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    rng = np.random.default_rng(3)
    batch = {"coords": np.stack([random_chain(rng, 24), random_chain(rng, 24)]), "mask": np.ones((2, 24), np.float32),
             "residue_idx": np.tile(np.arange(24, dtype=np.int32), (2, 1)),
             "tokens": rng.integers(0, 20, (2, 24)).astype(np.int32)}
    step = train.make_train_step(c, model, tx)
    losses = []
    for _ in range(120):
        state, m = step(state, batch)
        losses.append(float(m["loss/gen"]))
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    logits = model.apply({"params": state.params}, batch["coords"], batch["mask"], batch["residue_idx"],
                         jnp.full((2, 24), residues.MASK), with_projectors=False)[0]
    assert float((jnp.argmax(logits, -1) == batch["tokens"]).mean()) > 0.9  # recovered from the backbone alone
