import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reed_jax.image import sit
from reed_jax.image.sit import SiT
from reed_jax.targets import Target


@pytest.mark.parametrize("size,patch", [("S", 8), ("B", 4)])  # XL/2: test_sit_xl2_has_the_published_675m_params
def test_published_sizes_shapes(size, patch):
    depth, hidden, heads = sit.SIT_SIZES[size]
    targets = (Target("dino", f"block{min(8, depth)}", False, 768), Target("vlm", f"block{min(16, depth)}", True, 3584))
    m = SiT(input_size=32, in_channels=4, patch_size=patch, depth=depth, hidden=hidden, heads=heads,
            num_classes=1000, targets=targets)
    x, t, y = jnp.zeros((2, 32, 32, 4)), jnp.zeros((2,)), jnp.zeros((2,), jnp.int32)
    params = jax.eval_shape(lambda: nn.unbox(m.init({"params": jax.random.PRNGKey(0)}, x, t, y)))["params"]
    out, feats = jax.eval_shape(lambda p: m.apply({"params": p}, x, t, y), params)
    assert out.shape == (2, 32, 32, 4)
    assert feats["dino"].shape == (2, (32 // patch) ** 2, 768)
    assert feats["vlm"].shape == (2, 3584)
    assert params["y_embedder"]["embedding_table"].shape == (1001, hidden)
    assert params["final_layer"]["linear"]["kernel"].shape == (hidden, patch * patch * 4)


def test_sit_xl2_has_the_published_675m_params(sit_xl_reed):
    """SiT-XL/2 (the session's one XL trace, conftest.sit_xl_reed): 675M parameters without projectors."""
    params = sit_xl_reed[3].params
    n = sum(np.prod(a.shape) for k, a in jax.tree_util.tree_leaves_with_path(params)
            if "projectors" not in jax.tree_util.keystr(k))
    assert 674e6 < n < 676e6
    assert params["final_layer"]["linear"]["kernel"].shape == (1152, 2 * 2 * 4)
    assert params["blocks_27"]["attn"]["qkv"]["kernel"].shape == (1152, 3 * 1152) and "blocks_28" not in params


def tiny(targets=(), **kw):
    return SiT(input_size=8, in_channels=3, patch_size=2, depth=3, hidden=32, heads=4, num_classes=5,
               targets=targets, projector_width=16, **kw)


# jitted: one compiled program instead of one compile per primitive (eager init/grad of these tiny
# models cost 10-70 s on a loaded 2-core machine)
def init(m, *args):
    return jax.jit(lambda: nn.unbox(m.init({"params": jax.random.PRNGKey(0)}, *args))["params"])()


@jax.jit
def perturb(p):
    """Non-zero gates and final layer: every block changes the output."""
    return jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape)), p)


def apply(m, p, *args):
    return jax.jit(lambda p, *a: m.apply({"params": p}, *a))(p, *args)


def test_zero_velocity_at_init_and_reference_init():
    m = tiny((Target("a", "block2", False, 7),))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 3))
    p = init(m, x, jnp.ones((3,)) * 0.3, jnp.arange(3))
    out, feats = apply(m, p, x, jnp.ones((3,)) * 0.3, jnp.arange(3))
    np.testing.assert_array_equal(out, 0.0)  # adaLN-Zero + zero final layer
    assert float(jnp.abs(feats["a"]).sum()) > 0  # projectors are not zero-initialised
    for i in range(3):
        assert not p[f"blocks_{i}"]["adaLN_modulation"]["kernel"].any()
    assert not p["final_layer"]["linear"]["kernel"].any()
    assert abs(float(p["y_embedder"]["embedding_table"].std()) - 0.02) < 0.006
    # xavier-uniform bound sqrt(6 / (fan_in + fan_out)) of the qkv kernel [32, 96]
    assert float(jnp.abs(p["blocks_0"]["attn"]["qkv"]["kernel"]).max()) <= np.sqrt(6 / 128) + 1e-6
    # patch embed: xavier on the flattened kernel (fan_in = C*p*p = 12, fan_out = 32)
    assert float(jnp.abs(p["x_embedder"]["kernel"]).max()) <= np.sqrt(6 / 44) + 1e-6
    assert float(jnp.abs(p["x_embedder"]["kernel"]).max()) > np.sqrt(6 / (12 * 4 + 32 * 4))


def test_sincos_2d_hand_computed():
    pe = sit.sincos_2d(8, 2)  # tokens row-major over (h, w); dim 8 -> 4 channels per axis
    # token 1 is (h=0, w=1): w-half = [sin(1), sin(1/100), cos(1), cos(1/100)], h-half = [0, 0, 1, 1]
    np.testing.assert_allclose(pe[1], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01), 0, 0, 1, 1], atol=1e-6)
    # token 2 is (h=1, w=0)
    np.testing.assert_allclose(pe[2], [0, 0, 1, 1, np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)], atol=1e-6)


def test_timestep_embedding_hand_computed():
    e = np.asarray(sit.timestep_frequencies(jnp.array([0.0, 0.5]), dim=4))
    # freqs exp(-ln(1e4) i / 2) = [1, 0.01]; order [cos, sin]; raw t (no x1000)
    np.testing.assert_allclose(e[0], [1, 1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(e[1], [np.cos(0.5), np.cos(0.005), np.sin(0.5), np.sin(0.005)], atol=1e-6)


def test_label_dropout_uses_null_class_only_in_training():
    m = tiny()
    x = jnp.zeros((64, 8, 8, 3))
    p = init(m, x, jnp.zeros((64,)), jnp.zeros((64,), jnp.int32))
    emb = lambda train: m.apply({"params": p}, jnp.zeros((64,), jnp.int32), train,
                                method=lambda mod, y, tr: mod.y_embedder(y, tr),
                                rngs={"label_dropout": jax.random.PRNGKey(3)})
    table = p["y_embedder"]["embedding_table"]
    eval_rows = np.asarray(emb(False))
    np.testing.assert_allclose(eval_rows, np.broadcast_to(table[0], eval_rows.shape))
    train_rows = np.asarray(emb(True))
    dropped = np.all(np.isclose(train_rows, table[5]), axis=1)
    assert 0 < dropped.sum() < 64 and np.all(np.isclose(train_rows[~dropped], table[0]))


def test_pooled_target_projects_token_mean_and_tap_depth_checked():
    m = tiny((Target("g", "block1", True, 4),))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    p = init(m, x, jnp.ones((2,)), jnp.zeros((2,), jnp.int32))
    # at init all blocks are identity (zero gates), so the tap is the embedded input
    _, feats = apply(m, p, x, jnp.ones((2,)), jnp.zeros((2,), jnp.int32))
    h = m.apply({"params": p}, x, method=lambda mod, x: mod.x_embedder(x)).reshape(2, -1, 32) + sit.sincos_2d(32, 4)
    want = m.apply({"params": p}, h.mean(1), method=lambda mod, v: mod.projectors["g"](v))
    np.testing.assert_allclose(feats["g"], want, atol=1e-5)
    with pytest.raises(ValueError, match="targets.bad.tap='block4' is outside block1..block3"):
        tiny((Target("bad", "block4", False, 4),)).init({"params": jax.random.PRNGKey(0)}, x, jnp.ones((2,)),
                                                      jnp.zeros((2,), jnp.int32))


def test_sit_s_works_with_projectors():
    """The reference's SiT-S is broken by a hard-coded 768 decoder width; ours traces a training
    gradient (shapes: jax.eval_shape; that gradients reach projectors: test_remat_keeps_params_and_gradients)."""
    depth, hidden, heads = sit.SIT_SIZES["S"]
    m = SiT(input_size=8, in_channels=4, patch_size=2, depth=depth, hidden=hidden, heads=heads, num_classes=10,
            targets=(Target("dino", "block4", False, 768),), projector_width=64)
    x, t, y = jnp.ones((2, 8, 8, 4)), jnp.ones((2,)) * .5, jnp.zeros((2,), jnp.int32)
    p = jax.eval_shape(lambda: nn.unbox(m.init({"params": jax.random.PRNGKey(0)}, x, t, y))["params"])
    loss = lambda p: jnp.sum(m.apply({"params": p}, x, t, y)[0] ** 2) + m.apply({"params": p}, x, t, y)[1]["dino"].sum()
    g = jax.eval_shape(jax.grad(loss), p)
    assert g["final_layer"]["linear"]["kernel"].shape == (384, 2 * 2 * 4)
    assert g["projectors_dino"]["dense_0"]["kernel"].shape == (384, 64)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_keeps_params_and_gradients(policy):
    targets = (Target("a", "block2", False, 7),)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t, y = jnp.array([0.3, 0.9]), jnp.array([1, 2])
    plain, rem = tiny(targets), tiny(targets, remat=policy)
    p = init(plain, x, t, y)
    p_rem = jax.eval_shape(lambda: nn.unbox(rem.init({"params": jax.random.PRNGKey(0)}, x, t, y))["params"])
    assert jax.tree.structure(p) == jax.tree.structure(p_rem)  # checkpoints and the converter still apply
    p = perturb(p)

    def loss(m):
        return lambda q: sum(jnp.sum(o ** 2) for o in jax.tree.leaves(m.apply({"params": q}, x, t, y)))

    g, g_rem = jax.jit(jax.grad(loss(plain)))(p), jax.jit(jax.grad(loss(rem)))(p)
    assert float(jnp.abs(g["projectors_a"]["dense_0"]["kernel"]).sum()) > 0  # the tap reaches its projector
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_rem)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="model.remat='sometimes'"):
        tiny(remat="sometimes").init({"params": jax.random.PRNGKey(0)}, x, t, y)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    targets = (Target("a", "block2", False, 7),)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t, y = jnp.array([0.3, 0.9]), jnp.array([1, 2])
    f32, bf16 = tiny(targets), tiny(targets, dtype=jnp.bfloat16)
    p = init(bf16, x, t, y)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    p = perturb(p)
    out32, f32_feats = apply(f32, p, x, t, y)
    out16, bf_feats = apply(bf16, p, x, t, y)
    assert out16.dtype == jnp.float32 and bf_feats["a"].dtype == jnp.float32
    scale = float(jnp.abs(out32).max())
    assert float(jnp.abs(out16 - out32).max()) < 0.05 * scale  # bf16 has ~3 significant digits
    assert float(jnp.abs(out16 - out32).max()) > 0  # the switch really changes the compute


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scan_over_blocks_matches_per_block_model(remat):
    """nn.scan over the runs between taps: same outputs, taps and gradients as the per-block model,
    with params in the stacked layout that stack_blocks/unstack_blocks convert to and from."""
    targets = (Target("a", "block1", False, 7), Target("b", "block3", True, 5))
    m = SiT(input_size=8, in_channels=3, patch_size=2, depth=4, hidden=32, heads=4, num_classes=5,
            targets=targets, projector_width=16)
    m_scan = m.clone(scan=True, remat=remat)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t, y = jnp.array([0.3, 0.9]), jnp.array([1, 2])
    p = perturb(init(m, x, t, y))
    segments = sit.block_segments(4, targets)
    assert segments == [(0, 1), (1, 3), (3, 4)]
    p_scan = sit.stack_blocks(p, segments)
    shapes = jax.eval_shape(lambda: nn.unbox(m_scan.init({"params": jax.random.PRNGKey(0)}, x, t, y)))["params"]
    assert jax.tree.structure(shapes) == jax.tree.structure(p_scan)
    assert shapes["blocks_1_to_2"]["attn"]["qkv"]["kernel"].shape == (2, 32, 96)
    out, feats = apply(m, p, x, t, y)
    out_s, feats_s = apply(m_scan, p_scan, x, t, y)
    np.testing.assert_allclose(out, out_s, rtol=1e-5, atol=1e-6)
    for k in feats:
        np.testing.assert_allclose(feats[k], feats_s[k], rtol=1e-5, atol=1e-6)

    def loss(model):
        return lambda q: sum(jnp.sum(o ** 2) for o in jax.tree.leaves(model.apply({"params": q}, x, t, y)))

    g = jax.jit(jax.grad(loss(m)))(p)
    g_scan = sit.unstack_blocks(jax.jit(jax.grad(loss(m_scan)))(p_scan), segments)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_scan)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(sit.unstack_blocks(p_scan, segments))):
        np.testing.assert_array_equal(a, b)


def test_einsum_attention_matches_jax_attention_values_gradients_and_logits():
    """model.attention='einsum' (head-major einsums; what '' runs on CPU) computes what
    jax.nn.dot_product_attention ('xla') does: the same outputs and gradients of a whole SiT, and with
    HASTE's logit_heads the same logits as the separate q k^T the fused path needs."""
    targets = (Target("a", "block2", False, 7),)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    t, y = jnp.array([0.3, 0.9]), jnp.array([1, 2])
    ref, ein = tiny(targets, attention="xla"), tiny(targets, attention="einsum")
    p = perturb(init(ref, x, t, y))

    def loss(m):
        return lambda q: sum(jnp.sum(jnp.sin(3 * o)) for o in jax.tree.leaves(m.apply({"params": q}, x, t, y)))

    for a, b in zip(jax.tree.leaves(apply(ref, p, x, t, y)), jax.tree.leaves(apply(ein, p, x, t, y))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    g, g_ein = jax.jit(jax.grad(loss(ref)))(p), jax.jit(jax.grad(loss(ein)))(p)
    assert float(jnp.abs(g["blocks_0"]["attn"]["qkv"]["kernel"]).sum()) > 0
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ein)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    h = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 32))
    att = sit.Attention(hidden=32, heads=4, logit_heads=3, implementation="xla")
    pa = perturb(nn.unbox(att.init(jax.random.PRNGKey(3), h)["params"]))
    (o1, l1), (o2, l2) = att.apply({"params": pa}, h), att.clone(implementation="einsum").apply({"params": pa}, h)
    assert l2.shape == (2, 3, 9, 9) and l2.dtype == jnp.float32
    np.testing.assert_allclose(o1, o2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-5)
