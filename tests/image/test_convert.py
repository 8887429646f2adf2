"""The state-dict converter against an independent numpy transcription of the PyTorch reference
forward (NCHW, torch Linear layout), on random weights where every layer matters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.image import sit as sit_lib
from reed_jax.image.convert_sit import ConversionError, from_torch
from reed_jax.image.sit import SiT, sincos_2d
from reed_jax.targets import Target

B, C, HW, P, D, DEPTH, HEADS, NCLS = 2, 3, 8, 2, 16, 2, 2, 5


def random_state_dict(rng, projectors=((2, 8), (1, 6)), learn_sigma=False):
    def lin(name, i, o):
        sd[name + ".weight"] = rng.normal(size=(o, i)).astype(np.float32) * 0.3
        sd[name + ".bias"] = rng.normal(size=(o,)).astype(np.float32) * 0.1

    sd = {"x_embedder.proj.weight": rng.normal(size=(D, C, P, P)).astype(np.float32) * 0.3,
          "x_embedder.proj.bias": rng.normal(size=(D,)).astype(np.float32) * 0.1,
          "y_embedder.embedding_table.weight": rng.normal(size=(NCLS + 1, D)).astype(np.float32),
          "pos_embed": sincos_2d(D, HW // P)[None]}
    lin("t_embedder.mlp.0", 256, D)
    lin("t_embedder.mlp.2", D, D)
    for i in range(DEPTH):
        lin(f"blocks.{i}.attn.qkv", D, 3 * D)
        lin(f"blocks.{i}.attn.proj", D, D)
        lin(f"blocks.{i}.mlp.fc1", D, 4 * D)
        lin(f"blocks.{i}.mlp.fc2", 4 * D, D)
        lin(f"blocks.{i}.adaLN_modulation.1", D, 6 * D)
    lin("final_layer.adaLN_modulation.1", D, 2 * D)
    lin("final_layer.linear", D, P * P * C * (2 if learn_sigma else 1))
    for k, (_, z) in enumerate(projectors):
        lin(f"projectors.{k}.0", D, 12)
        lin(f"projectors.{k}.2", 12, 12)
        lin(f"projectors.{k}.4", 12, z)
    return sd


def ref_forward(sd, x, t, y, depth_tap):
    """numpy transcription of the reference SiT forward; x NCHW -> (out NCHW, projected tokens)."""
    silu = lambda a: a / (1 + np.exp(-a))
    gelu = lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    lin = lambda a, n: a @ sd[n + ".weight"].T + sd[n + ".bias"]
    ln = lambda a: (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-6)
    g = HW // P
    patches = x.reshape(B, C, g, P, g, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * P * P)
    h = patches @ sd["x_embedder.proj.weight"].reshape(D, -1).T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    freqs = np.exp(-np.log(10000) * np.arange(128) / 128)
    tf = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], -1)
    c = lin(silu(lin(tf, "t_embedder.mlp.0")), "t_embedder.mlp.2") + sd["y_embedder.embedding_table.weight"][y]
    zs = None
    for i in range(DEPTH):
        sm, cm, gm, sp, cp, gp = np.split(lin(silu(c), f"blocks.{i}.adaLN_modulation.1"), 6, -1)
        a = ln(h) * (1 + cm[:, None]) + sm[:, None]
        qkv = lin(a, f"blocks.{i}.attn.qkv").reshape(B, -1, 3, HEADS, D // HEADS).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D // HEADS)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B, -1, D)
        h = h + gm[:, None] * lin(o, f"blocks.{i}.attn.proj")
        a = ln(h) * (1 + cp[:, None]) + sp[:, None]
        h = h + gp[:, None] * lin(gelu(lin(a, f"blocks.{i}.mlp.fc1")), f"blocks.{i}.mlp.fc2")
        if i + 1 == depth_tap:
            zs = lin(silu(lin(silu(lin(h, "projectors.0.0")), "projectors.0.2")), "projectors.0.4")
    s, sc = np.split(lin(silu(c), "final_layer.adaLN_modulation.1"), 2, -1)
    out = lin(ln(h) * (1 + sc[:, None]) + s[:, None], "final_layer.linear")
    cc = out.shape[-1] // (P * P)
    out = out.reshape(B, g, g, P, P, cc).transpose(0, 5, 1, 3, 2, 4).reshape(B, cc, HW, HW)
    return out[:, :C], zs


def model(targets, scan=False):
    return SiT(input_size=HW, in_channels=C, patch_size=P, depth=DEPTH, hidden=D, heads=HEADS, num_classes=NCLS,
               targets=targets, projector_width=12, scan=scan)


@pytest.mark.parametrize("learn_sigma,scan", [(False, False), (True, False), (False, True)])
def test_converted_params_reproduce_reference_forward(learn_sigma, scan):
    rng = np.random.default_rng(0)
    sd = random_state_dict(rng, learn_sigma=learn_sigma)
    targets = (Target("dino", "block2", False, 8), Target("vlm", "block1", True, 6))
    segments = sit_lib.block_segments(DEPTH, targets) if scan else None
    params = from_torch(sd, target_names=["dino", "vlm"], scan_segments=segments)
    m = model(targets, scan)
    ref_params = jax.eval_shape(lambda: sit_lib.init_params(m, jax.random.PRNGKey(0)))
    assert jax.tree.structure(ref_params) == jax.tree.structure(params)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)))
    x = rng.normal(size=(B, C, HW, HW)).astype(np.float32)
    t, y = np.array([0.3, 0.8], np.float32), np.array([1, NCLS])
    out, feats = m.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t), jnp.asarray(y))
    ref_out, ref_z = ref_forward(sd, x.astype(np.float64), t.astype(np.float64), y, depth_tap=2)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref_out, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(feats["dino"], ref_z, atol=1e-4, rtol=1e-4)


def test_projectors_dropped_and_errors():
    rng = np.random.default_rng(1)
    sd = random_state_dict(rng)
    params = from_torch(sd, drop_projectors=True)
    assert not any(k.startswith("projectors") for k in params)
    with pytest.raises(ConversionError, match="2 projectors"):
        from_torch(sd, target_names=["only_one"])
    with pytest.raises(ConversionError, match="not converted"):
        from_torch({**sd, "extra.weight": np.zeros(1)}, drop_projectors=True)
    bad = dict(sd, pos_embed=np.zeros_like(sd["pos_embed"]))
    with pytest.raises(ConversionError, match="pos_embed"):
        from_torch(bad, drop_projectors=True)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(ConversionError, match="blocks.1.mlp.fc2.bias"):
        from_torch(missing, drop_projectors=True)
    with pytest.raises(ConversionError, match="do not cover"):
        from_torch(sd, drop_projectors=True, scan_segments=[(0, 1)])


def test_sit_matches_a_pytorch_forward():
    """tools/make_parity_fixtures.py sit: a PyTorch SiT in REPA's layout and names with REED's token
    projector (after block 2) and pooled projector (token mean after block 3), random weights
    everywhere; our converter + SiT reproduce its velocity and both projections."""
    import os

    f = np.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "sit_parity.npz"))
    c, hw, p, d, depth, heads, ncls, w, tok_depth, tok_dim, pool_depth, pool_dim = (int(v) for v in f["sizes"])
    sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
    targets = (Target("img", f"block{tok_depth}", False, tok_dim), Target("txt", f"block{pool_depth}", True, pool_dim))
    m = SiT(input_size=hw, in_channels=c, patch_size=p, depth=depth, hidden=d, heads=heads, num_classes=ncls,
            targets=targets, projector_width=w)
    params = from_torch(sd, target_names=["img", "txt"])
    x = jnp.asarray(f["x"].transpose(0, 2, 3, 1))
    with jax.default_matmul_precision("float32"):
        out, feats = m.apply({"params": params}, x, jnp.asarray(f["t"]), jnp.asarray(f["y"]))
    v = np.asarray(out).transpose(0, 3, 1, 2)
    assert np.abs(f["velocity"]).mean() > 0.1 and np.abs(f["z_pool"]).std() > 0.1  # every layer matters
    np.testing.assert_allclose(v, f["velocity"], atol=2e-5, rtol=2e-5)  # float32 vs float64: ~1e-6
    np.testing.assert_allclose(feats["img"], f["z_tok"], atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(feats["txt"], f["z_pool"], atol=2e-5, rtol=2e-5)
