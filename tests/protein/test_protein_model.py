"""Protein track: featurisation, ProteinMPNN parity with colabdesign, invariances, masked diffusion."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.convert import joblib_file
from reed_jax.protein import (
    config as protein_config,
    convert_mpnn as proteinmpnn,
    features,
    masked_diffusion,
    model as pmodel,
    mpnn,
    residues,
    teacher,
)

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


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


def test_colabdesign_parity_of_the_teacher_targets():
    """The taps that serve as REED targets against colabdesign's own intermediate outputs (captured by
    haiku method interception in tools/make_proteinmpnn_fixture.py): encoder nodes and edges, every
    decoder layer's nodes, the kNN graph, and teacher.make_fn's `structure`, `single`, `pair`, `pair_idx`."""
    model, params = teacher.load(os.path.join(FIX, "proteinmpnn_tiny.pkl"))
    f = np.load(os.path.join(FIX, "proteinmpnn_tiny.npz"))
    n = len(f["S"])
    args = (f["X"][None], np.ones((1, n), np.float32), np.arange(n)[None], f["S"][None])
    _, taps = jax.jit(lambda p: model.apply({"params": p}, *args))(params)
    np.testing.assert_array_equal(np.asarray(taps["e_idx"][0]), f["e_idx"])  # same neighbours, same order
    for name, want in (("encoder_nodes", f["enc_nodes"]), ("encoder_edges", f["enc_edges"]),
                       ("decoder1_nodes", f["dec1_nodes"]), ("decoder2_nodes", f["dec2_nodes"]),
                       ("decoder3_nodes", f["dec3_nodes"])):
        np.testing.assert_allclose(np.asarray(taps[name][0]), want, atol=1e-5, err_msg=name)  # max 1.9e-6
    out = teacher.make_fn(model, params)(*args)
    for name, want in (("structure", f["enc_nodes"]), ("single", f["dec3_nodes"]), ("pair", f["enc_edges"]),
                       ("pair_idx", f["e_idx"])):
        np.testing.assert_allclose(np.asarray(out[name][0]), want, atol=1e-5, err_msg=name)


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
    """REED's student layout (22 classes, decoder edge updates, learned initial nodes)."""
    return mpnn.MPNN(hidden=16, k=6, dropout=0.0, backbone_noise=0.0, num_letters=22, decoder_edge_mlp=True,
                     update_edge=True, learnable_node=True, **kw)


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
    np.testing.assert_allclose(taps2["decoder2_edges"], taps["decoder2_edges"], atol=2e-4)
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


def test_corruption_and_time_sampling_distribution():
    """t ~ U[t_min, t_max] per chain (KS test against that law, not just its range) and each real residue
    masked with probability 1 - t (t = clean fraction); padding never masked."""
    from scipy import stats

    rng = jax.random.PRNGKey(0)
    tokens = jnp.tile(jnp.arange(20), (2000, 5))  # [2000, 100]
    mask = jnp.ones_like(tokens, jnp.float32).at[:, 90:].set(0)
    noisy, t, hidden = masked_diffusion.corrupt(rng, tokens, mask, 0.01, 0.99)
    t = np.asarray(t)
    assert t.min() >= 0.01 and t.max() <= 0.99
    assert stats.kstest(t, stats.uniform(loc=0.01, scale=0.98).cdf).pvalue > 0.01
    assert stats.kstest(t, stats.beta(2, 1).cdf).pvalue < 1e-6  # the test tells laws apart
    assert not bool(hidden[:, 90:].any()) and bool(jnp.all(noisy[:, 90:] == tokens[:, 90:]))
    frac = np.asarray(hidden[:, :90].mean(1))
    assert abs(np.mean(frac - (1 - t))) < 0.005 and np.corrcoef(frac, 1 - t)[0, 1] > 0.97
    assert bool(jnp.all((noisy == residues.MASK) == hidden))


def test_label_smoothing_over_22_classes_by_hand():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 22))
    y = jnp.array([[0, 5, 20], [1, 2, 3]])
    q = (np.eye(22)[np.asarray(y)] + 0.1 / 22) / 1.1  # the reference: one_hot(S, 22) + 0.1 / 22, renormalised
    want = -(q * np.asarray(jax.nn.log_softmax(logits))).sum(-1)
    np.testing.assert_allclose(masked_diffusion.smoothed_cross_entropy(logits, y, 0.1), want, rtol=1e-6)


def _sampler_stub(p_masked, n_classes=22):
    """logits_fn: a revealed residue predicts its own token (so the final argmax shows what was drawn); a
    masked one predicts log(p_masked) (a dict {class: prob}); MASK gets the top logit (must be excluded)."""
    lp = np.full(n_classes, -30.0, np.float32)
    for c, v in p_masked.items():
        lp[c] = np.log(v)
    if n_classes > residues.MASK:
        lp[residues.MASK] = 5.0

    def fn(tok):
        own = jax.nn.one_hot(tok, n_classes) * 50.0 - 25.0
        if n_classes > residues.MASK:
            own = own.at[..., residues.MASK].set(5.0)
        return jnp.where((tok == residues.MASK)[..., None], jnp.asarray(lp), own)
    return fn


def test_sampler_grid_draws_temperature_and_x():
    """The reference's sampler: grid linspace(0.01, 1, N) (reveal probability dt / (1 - t1)), draws from
    softmax(logits / temperature) over every class but MASK, X allowed; the result is the argmax of the
    last in-loop prediction. Pinned by frequencies over 8000 residues."""
    p = {5: 0.5, 6: 0.3, residues.X: 0.2}
    mask = jnp.ones((4000, 2), jnp.float32)
    out = np.asarray(masked_diffusion.sample(_sampler_stub(p), jax.random.PRNGKey(1), mask, num_steps=5,
                                             temperature=1.0))
    ts = np.linspace(0.01, 1.0, 5)
    still = (1 - ts[-2]) / (1 - ts[0])  # masked when the last model call sees it: 0.25 (0.2 on an i/N grid)
    freq = {c: float((out == c).mean()) for c in (5, 6, residues.X)}
    assert freq[5] == pytest.approx(still + (1 - still) * 0.5, abs=0.02)  # still masked -> argmax 5
    assert freq[6] == pytest.approx((1 - still) * 0.3, abs=0.015)
    assert freq[residues.X] == pytest.approx((1 - still) * 0.2, abs=0.015)  # X is drawn
    assert not (out == residues.MASK).any()
    # temperature 0.5 sharpens the draws: p^2 renormalised
    out = np.asarray(masked_diffusion.sample(_sampler_stub(p), jax.random.PRNGKey(2), mask, num_steps=5,
                                             temperature=0.5))
    q = np.array([0.25, 0.09, 0.04]) / 0.38
    assert float((out == 6).mean()) == pytest.approx((1 - still) * q[1], abs=0.015)
    assert float((out == residues.X).mean()) == pytest.approx((1 - still) * q[2], abs=0.012)
    # X excluded on request (draws and argmax), padding gets X
    m = jnp.ones((4000, 2), jnp.float32).at[:, 1].set(0)
    out = np.asarray(masked_diffusion.sample(_sampler_stub(p), jax.random.PRNGKey(3), m, num_steps=5,
                                             temperature=1.0, allow_x=False))
    assert not (out[:, 0] == residues.X).any() and (out[:, 1] == residues.X).all()


def test_sampler_returns_last_in_loop_prediction_without_an_extra_pass():
    """A model that answers 7 while any residue is masked and 9 once none is: the reference returns the
    argmax of its last in-loop call (which still sees masked residues: 7), never a pass after the loop (9)."""
    def fn(tok):
        any_masked = (tok == residues.MASK).any(-1, keepdims=True)[..., None]
        return jnp.where(any_masked, jax.nn.one_hot(jnp.full(tok.shape, 7), 22), jax.nn.one_hot(jnp.full(tok.shape, 9), 22))
    out = masked_diffusion.sample(fn, jax.random.PRNGKey(0), jnp.ones((50, 30)), num_steps=3, temperature=0.1)
    assert bool(jnp.all(out == 7))
    with pytest.raises(ValueError, match="protein.sample_steps"):
        masked_diffusion.sample(fn, jax.random.PRNGKey(0), jnp.ones((1, 3)), num_steps=1)


def _np_ln(x, p, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_dense(x, p):
    return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def _np_gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def test_decoder_edge_update_by_hand_and_pair_tap():
    """REED's decoder layer (--update_edge): h_ES_new = norm_edge(h_ES + W_edge([message, h_ES])) with
    W_edge = LN -> Linear(3H, 3H) -> GELU -> Linear(3H, 2H); the next layer reads h_ES_new; the tap
    decoder2_edges is layer 2's h_ES_new (what the reference's pair target aligns to)."""
    rng = np.random.default_rng(0)
    n, h = 10, 8
    x = random_chain(rng, n)
    tok = rng.integers(0, 22, n)
    m = mpnn.MPNN(hidden=h, k=5, dropout=0.0, backbone_noise=0.0, num_letters=22, decoder_edge_mlp=True,
                  update_edge=True, learnable_node=True)
    args = (x[None], np.ones((1, n), np.float32), np.arange(n)[None], tok[None])
    params = jax.jit(lambda k: m.init(k, *args)["params"])(jax.random.PRNGKey(0))
    logits, taps = jax.jit(lambda p: m.apply({"params": p}, *args))(params)
    assert logits.shape == (1, n, 22) and taps["decoder2_edges"].shape == (1, n, 5, 2 * h)
    # decoder layer 2 by hand, from layer 1's outputs
    e_idx = np.asarray(taps["e_idx"])[0]
    h_v, h_es = np.asarray(taps["decoder1_nodes"])[0], np.asarray(taps["decoder1_edges"])[0]  # updated edges
    p = jax.tree.map(np.asarray, params["dec1"])
    h_esv = np.concatenate([h_es, h_v[e_idx]], -1)
    hh = np.concatenate([np.broadcast_to(h_v[:, None], (n, 5, h)), h_esv], -1)
    msg = _np_dense(_np_gelu(_np_dense(_np_gelu(_np_dense(hh, p["W1"])), p["W2"])), p["W3"])
    e = _np_ln(np.concatenate([msg, h_es], -1), p["W_edge_norm"])
    e = _np_dense(_np_gelu(_np_dense(e, p["W_edge_in"])), p["W_edge_out"])
    np.testing.assert_allclose(taps["decoder2_edges"][0], _np_ln(h_es + e, p["norm_edge"]), atol=2e-5)
    v = _np_ln(h_v + msg.sum(1) / 30.0, p["norm1"])
    ff = _np_dense(_np_gelu(_np_dense(v, p["dense"]["W_in"])), p["dense"]["W_out"])
    np.testing.assert_allclose(taps["decoder2_nodes"][0], _np_ln(v + ff, p["norm2"]), atol=2e-5)
    # without update_edge every layer reads the static h_ES (same params): layer 2 differs
    static = jax.jit(lambda p: m.clone(update_edge=False).apply({"params": p}, *args)[1])(params)
    np.testing.assert_allclose(static["decoder1_nodes"], taps["decoder1_nodes"], atol=1e-6)
    assert float(jnp.abs(static["decoder2_nodes"] - taps["decoder2_nodes"]).max()) > 1e-3
    # the initial node features are learned: they get a gradient
    g = jax.grad(lambda p: m.apply({"params": p}, *args)[0].sum())(params)
    assert float(jnp.abs(g["node_embeds"]).max()) > 0
    # the reference config's pair target reads that tap
    c = protein_config.protein_config("reed", "reference")
    assert c.targets.pair.tap == "decoder2_edges" and c.protein.update_edge and c.protein.learnable_node
    assert pmodel.is_edge("decoder2_edges") and not pmodel.is_edge("decoder2_nodes")


def test_reference_init_xavier_matrices_torch_biases_learnable_nodes():
    """Every matrix xavier-uniform (bound sqrt(6 / (fan_in + fan_out)), variance 2 / (fan_in + fan_out)),
    biases U(+-1/sqrt(fan_in)), the initial node features a learned vector (zeros at init);
    projectors PyTorch's default U(+-1/sqrt(fan_in))."""

    c = protein_config.protein_config("reed", "reference")
    c.protein.max_length = 32
    model = pmodel.build_model(c)
    params = jax.jit(lambda k: pmodel.init_params(c, model, k))(jax.random.PRNGKey(0))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(params)}
    assert np.all(flat["net/node_embeds"] == 0) and flat["net/node_embeds"].shape == (128,)
    checked = 0
    for name, w in flat.items():
        if name.endswith("kernel") and "projectors" not in name or name.endswith("W_s/embedding"):
            fan_in, fan_out = w.shape
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            assert np.abs(w).max() <= bound + 1e-7, name
            if w.size >= 4000:
                assert np.var(w) == pytest.approx(bound ** 2 / 3, rel=0.1), name
                checked += 1
        elif name.endswith("bias") and "norm" not in name:
            fan_in = flat[name[:-4] + "kernel"].shape[0]
            assert np.abs(w).max() <= 1 / np.sqrt(fan_in) + 1e-7 and np.abs(w).max() > 0.3 / np.sqrt(fan_in), name
        elif "projectors" in name and name.endswith("kernel"):
            assert np.abs(w).max() <= 1 / np.sqrt(w.shape[0]) + 1e-7
            assert np.var(w) == pytest.approx(1 / (3 * w.shape[0]), rel=0.1), name
    assert checked >= 10



def _np_standardize(x, valid):
    v = x[valid]
    return (x - v.mean(0)) / (v.std(0) + 1e-6)


def _np_neg_cos(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return -(a * b).sum(-1)


def test_losses_by_hand_token_weighted_and_noise_convention():
    """protein.model.losses on a hand-made batch of two chains of 12 and 7 residues, against numpy:
    generative = (loss_tokens / loss_norm) x the token-mean label-smoothed CE (22 classes) of the batch
    (the reference's sum / 2000 on 20,000 tokens, at any batch size); alignment = the mean -cos over
    every valid residue / edge of the batch (token-weighted, targets standardised over the batch);
    the noise level handed to objective.combine is 1 - t (t = clean fraction), so a 'linear' a(t) = 1 - t
    weighs the cleaner chain more."""
    from reed_jax import objective

    c = protein_config.protein_config("reed")
    c.model.update(hidden=8)
    c.protein.update(max_length=12, k=4, enc_layers=1, dec_layers=2, dropout=0.0, backbone_noise=0.0)
    for t in c.targets.values():
        t.update(dim=6, proj_width=8)
    model = pmodel.build_model(c)
    rng = np.random.default_rng(5)
    lengths = (12, 7)
    mask = np.zeros((2, 12), np.float32)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    batch = {"coords": np.stack([random_chain(rng, 12), random_chain(rng, 12)]), "mask": mask,
             "residue_idx": np.tile(np.arange(12, dtype=np.int32), (2, 1)),
             "tokens": np.where(mask > 0, rng.integers(0, 21, (2, 12)), residues.X).astype(np.int32),
             "target/structure": rng.normal(2.0, 3.0, (2, 12, 6)).astype(np.float32),
             "target/single": rng.normal(size=(2, 12, 6)).astype(np.float32),
             "target/pair": rng.normal(size=(2, 12, 5, 6)).astype(np.float32),
             "target/pair_idx": np.stack([np.stack([rng.permutation(12)[:5] for _ in range(12)]) for _ in range(2)])}
    batch["target/pair_idx"][:, :, 0] = np.arange(12)  # every residue's own edge is a teacher edge
    params = jax.jit(lambda k: pmodel.init_params(c, model, k))(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    gen, align, noise = jax.jit(lambda p, bt: pmodel.losses(c, model, p, bt, key))(params, batch)
    # the same forward pass, then the loss arithmetic in numpy
    k_c, k_d, k_n = jax.random.split(key, 3)
    noisy, t_clean, _ = masked_diffusion.corrupt(k_c, jnp.asarray(batch["tokens"]), jnp.asarray(mask), 0.01, 0.99)
    logits, feats, e_idx = model.apply({"params": params}, batch["coords"], mask, batch["residue_idx"], noisy,
                                       train=True, rngs={"dropout": k_d, "noise": k_n})
    logits, e_idx = np.asarray(logits, np.float64), np.asarray(e_idx)
    assert logits.shape[-1] == 22
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = (np.eye(22)[batch["tokens"]] + 0.1 / 22) / 1.1
    ce = -(q * logp).sum(-1)
    n_tok = mask.sum()
    np.testing.assert_allclose(float(gen.mean()), 10.0 * (ce * mask).sum() / n_tok, rtol=1e-5)
    np.testing.assert_allclose(gen, 10.0 * 2 * (ce * mask).sum(1) / n_tok, rtol=1e-5)
    np.testing.assert_allclose(noise, 1.0 - np.asarray(t_clean), rtol=1e-6)
    valid = mask > 0
    per_token = {}
    for name in ("structure", "single"):
        y = _np_standardize(batch[f"target/{name}"].astype(np.float64), valid)
        per_token[name] = (_np_neg_cos(np.asarray(feats[name], np.float64), y), valid)
    y = np.zeros((2, 12, 4, 6))
    ev = np.zeros((2, 12, 4), bool)
    for b in range(2):
        for i in range(12):
            for k in range(4):
                hit = np.flatnonzero(batch["target/pair_idx"][b, i] == e_idx[b, i, k])
                if hit.size:
                    y[b, i, k] = batch["target/pair"][b, i, hit[0]]
                ev[b, i, k] = bool(hit.size) and valid[b, i] and valid[b, e_idx[b, i, k]]
    per_token["pair"] = (_np_neg_cos(np.asarray(feats["pair"], np.float64), _np_standardize(y, ev)), ev)
    assert ev[1].sum() < ev[0].sum()  # the chains carry different token counts: per-chain means would differ
    for name, (cos, v) in per_token.items():
        np.testing.assert_allclose(float(align[name].mean()), (cos * v).sum() / v.sum(), rtol=1e-5, atol=1e-6)
    # objective.combine with a(t) = 1 - noise level = the clean fraction, per chain, token-weighted
    targets = {n: dict(t) for n, t in c.targets.items()}
    targets["single"]["noise_weight"] = "linear"
    loss, metrics = objective.combine(gen, align, noise, 1.0, 0.2, targets)
    cos, v = per_token["single"]
    a = np.asarray(t_clean)[:, None]
    np.testing.assert_allclose(float(metrics["loss/align"]) - 1.0 * float(align["structure"].mean())
                               - 2.0 * float(align["pair"].mean()), 0.5 * (a * cos * v).sum() / v.sum(),
                               rtol=1e-4, atol=1e-6)


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
    from reed_jax import train

    c = protein_config.protein_config("base")
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


def test_reference_config_no_clipping_no_ema_raw_params_evaluated():
    """The reference trains without gradient clipping and without EMA and evaluates the raw params:
    the reference size's optimiser is plain Adam on a gradient of norm 1e4, and after a train step
    the params the evaluator reads (state.ema_params) are the raw params, bit for bit."""
    import optax

    from reed_jax import config as config_lib, train

    c = protein_config.protein_config("base", "reference")
    config_lib.validate(c)
    assert c.optim.grad_clip == float("inf") and c.optim.ema_decay == 0.0 and c.protein.sample_steps == 500
    grads = {"w": jnp.full((10,), 3e3), "b": jnp.full((3,), -1e3)}
    params = jax.tree.map(jnp.zeros_like, grads)
    tx = train.make_optimizer(c)
    ref = optax.adamw(c.optim.lr, b1=c.optim.b1, b2=c.optim.b2, eps=c.optim.eps, weight_decay=0.0)
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = ref.update(grads, ref.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    c.model.update(hidden=8)
    c.protein.update(max_length=12, k=4, enc_layers=1, dec_layers=1)
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.init_state(c, model, tx)
    rng = np.random.default_rng(3)
    batch = {"coords": np.stack([random_chain(rng, 12)] * 2), "mask": np.ones((2, 12), np.float32),
             "residue_idx": np.tile(np.arange(12, dtype=np.int32), (2, 1)),
             "tokens": rng.integers(0, 20, (2, 12)).astype(np.int32)}
    before = jax.tree.map(np.asarray, state.params)
    state, _ = train.make_train_step(c, model, tx)(state, batch)
    assert any(np.abs(np.asarray(a) - b).max() > 0 for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)))
    jax.tree.map(lambda e, p: np.testing.assert_array_equal(np.asarray(e), np.asarray(p)), state.ema_params, state.params)


class _FixedLogits(__import__("flax").linen.Module):
    """A stand-in backbone whose logits are a fixed [L, 22] table (for metrics with known answers)."""
    table: tuple

    def __call__(self, coords, mask, residue_idx, tokens, train=False):
        logits = jnp.broadcast_to(jnp.asarray(self.table, jnp.float32), tokens.shape + (22,))
        return logits, {"e_idx": jnp.zeros(tokens.shape + (1,), jnp.int32)}


def test_evaluator_metrics_on_known_answers():
    """Perplexity, perplexity_all, masked accuracy, recovery and diversity where the answer is known: a
    model predicting 3 with p = 0.5, 7 with 0.3 and X with 0.2 everywhere, on chains whose native is 3
    at even and 7 at odd positions (two chains, one padded)."""
    from reed_jax.protein import evaluate as peval

    row = np.full(22, -40.0)
    row[[3, 7, residues.X]] = np.log([0.5, 0.3, 0.2])
    model = pmodel.ProteinREED(_FixedLogits(tuple(map(tuple, np.tile(row, (10, 1))))))
    mask = np.ones((2, 10), np.float32)
    mask[1, 6:] = 0
    tokens = np.where(np.arange(10) % 2 == 0, 3, 7)[None].repeat(2, 0).astype(np.int32)
    batch = {"coords": np.zeros((2, 10, 4, 3), np.float32), "mask": mask,
             "residue_idx": np.tile(np.arange(10, dtype=np.int32), (2, 1)), "tokens": tokens}
    c = protein_config.protein_config("base")
    c.protein.update(sample_steps=4, eval_samples=3)
    out, _ = peval.make_evaluator(c, model, [batch])({}, 5)
    real = mask > 0
    nll = np.where(tokens == 3, -np.log(0.5), -np.log(0.3))
    assert out["perplexity_all"] == pytest.approx(np.exp(nll[real].mean()), rel=1e-5)
    _, _, hidden = masked_diffusion.corrupt(jax.random.PRNGKey(1000), jnp.asarray(tokens), jnp.asarray(mask), 0.01, 0.99)
    h = np.asarray(hidden)
    assert out["perplexity"] == pytest.approx(np.exp(nll[h].mean()), rel=1e-5)
    assert out["masked_accuracy"] == pytest.approx((tokens[h] == 3).mean(), rel=1e-6)
    # designs are the argmax (3) everywhere: recovery = fraction of even positions, diversity 0
    assert out["recovery"] == pytest.approx(np.mean([5 / 10, 3 / 6])) and out["diversity"] == 0.0
    assert out["chains"] == 2
    # recovery and diversity by hand on draws with known differences (padding ignored)
    draws = np.array([[[3, 7, 3, 7], [1, 1, 1, 1]], [[3, 3, 3, 3], [1, 1, 2, 2]], [[7, 7, 7, 7], [1, 2, 2, 9]]])
    native = np.array([[3, 7, 3, 7], [1, 1, 2, 2]])
    m = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    rec, div = peval.sequence_metrics(draws, native, m)
    np.testing.assert_allclose(rec, [(1 + 0.5 + 0.5) / 3, (2 / 3 + 1 + 2 / 3) / 3])
    np.testing.assert_allclose(div, [(0.5 + 0.5 + 1) / 3, (1 / 3 + 2 / 3 + 1 / 3) / 3])
