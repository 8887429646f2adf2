"""SiT backbone (DiT architecture, adaLN-Zero) with REED alignment taps and projectors.

Layout: images are NHWC (`x: [B, H, W, C]`); the PyTorch reference is NCHW. Time `t: [B]` in
[0, 1] with 1 = pure noise, fed to the timestep embedding raw (no x1000). Labels `y: [B]` int in
[0, num_classes]; `num_classes` is the null class used by classifier-free guidance.

The forward returns `(velocity [B, H, W, C], {target_name: projected features})`. A token-level
target (reed_jax.targets.Target, tap 'block<N>') gets `[B, T, dim]` (projector on every token of the
raw residual stream after block N), a pooled target gets `[B, dim]` (projector on the token mean).
Sampling calls the model with `with_projectors=False`, which skips every projector.

Submodule names follow the reference state dict so `reed_jax.image.convert_sit` is a rename table.

Every parameter carries logical axis names (flax logical partitioning; `LOGICAL_AXES` lists
them, `reed_jax.parallel.RULES` maps them to mesh axes). `init_params` returns plain arrays;
`logical_specs` returns the names as a tree of PartitionSpecs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.models.projector import ConvProjector, Projector, dense, xavier, zeros  # noqa: F401  (re-exported)
from reed_jax.targets import Target

# (depth, hidden, heads) of the published sizes; the patch size is chosen separately.
SIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

# Per-block rematerialisation: 'full' saves nothing inside a block, 'dots' saves matmul outputs,
# 'dots_no_batch' saves matmuls without batch dimensions (weights-stationary ones).
REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

normal002 = nn.initializers.normal(stddev=0.02)
# The reference flattens the conv kernel [D, C, p, p] -> [D, C*p*p] before xavier init.
patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)

# Logical axis names of the parameters: embed = the residual width D; mlp = the MLP hidden 4D;
# qkv = 3D; heads = attention output (heads x head_dim) into the output projection; adaln = the
# 6D / 2D modulation; temb = the timestep MLP hidden; freq = the 256 timestep frequencies; vocab =
# label table rows; patch = p*p*C pixel outputs; patch_in = conv kernel spatial/channel axes;
# proj / proj_in = projector width; target = target width z_dim; layers = stacked blocks (scan).
LOGICAL_AXES = ("embed", "mlp", "qkv", "heads", "adaln", "temb", "freq", "vocab", "patch", "patch_in",
                "proj", "proj_in", "target", "layers")


TAP_PREFIX = "block"  # a target's tap 'block<N>': the tokens after block N (1-based)


def tap_depth(target: Target) -> int:
    """The block after which `target` taps (its tap 'block<N>' -> N); a ValueError names any other tap."""
    digits = target.tap[len(TAP_PREFIX):] if target.tap.startswith(TAP_PREFIX) else ""
    if not digits.isdigit():
        raise ValueError(f"targets.{target.name}.tap={target.tap!r}: SiT taps are '{TAP_PREFIX}<N>'")
    return int(digits)


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE 1D sin-cos embedding: pos [M] -> [M, dim], channels [sin(pos w), cos(pos w)]."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """MAE 2D sin-cos position embedding, [grid_size**2, dim] float32, row-major tokens.

    The first half of the channels comes from the w (column) coordinate, the second from h,
    exactly as `np.meshgrid(grid_w, grid_h)` orders them in the reference.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs hidden size divisible by 4, got {dim}")
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # grid[0]: w coordinate, grid[1]: h coordinate
    emb_w = sincos_1d(dim // 2, grid[0])
    emb_h = sincos_1d(dim // 2, grid[1])
    return np.concatenate([emb_w, emb_h], axis=1).astype(np.float32)


def timestep_frequencies(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """t: [B] (raw, in [0,1]) -> [B, dim] with channels [cos(t f_i), sin(t f_i)], f_i = exp(-ln(P) i / (dim/2))."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x: [B, T, D], shift/scale: [B, D]."""
    return x * (1 + scale[:, None]) + shift[:, None]


def layer_norm() -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False)


class TimestepEmbedder(nn.Module):
    hidden: int
    freq_dim: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t):
        h = timestep_frequencies(t, self.freq_dim).astype(self.dtype)
        h = dense(self.hidden, ("freq", "temb"), normal002, self.dtype, name="mlp_0")(h)
        return dense(self.hidden, ("temb", "embed"), normal002, self.dtype, name="mlp_2")(nn.silu(h))


class LabelEmbedder(nn.Module):
    """Label table with `num_classes + 1` rows; the last row is the null (CFG) class."""
    num_classes: int
    hidden: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y, train: bool):
        table = self.param("embedding_table", nn.with_logical_partitioning(normal002, ("vocab", "embed")),
                           (self.num_classes + 1, self.hidden))
        if train and self.dropout > 0:
            drop = jax.random.uniform(self.make_rng("label_dropout"), y.shape) < self.dropout
            y = jnp.where(drop, self.num_classes, y)
        return jnp.take(table, y, axis=0).astype(self.dtype)


class Attention(nn.Module):
    """Multi-head self-attention. With `logit_heads` > 0 it also returns the pre-softmax attention
    logits `q k^T / sqrt(head_dim)` of its first `logit_heads` heads, [B, logit_heads, N, N] float32
    (HASTE's attention alignment), computed beside the fused attention and differentiable."""
    hidden: int
    heads: int
    dtype: Any = jnp.float32
    # None: 'einsum' on CPU, else jax.nn.dot_product_attention's choice; 'xla', 'cudnn'; 'einsum'
    implementation: str | None = None
    logit_heads: int = 0

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        qkv = dense(3 * d, ("embed", "qkv"), xavier, self.dtype, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.heads, d // self.heads)  # reference order: (3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        h = self.logit_heads
        impl = self.implementation
        if impl is None and jax.default_backend() == "cpu":
            impl = "einsum"  # jax's choice there is 'xla', slower on CPU (bench/cpu_attention.py)
        if impl == "einsum":
            out, scores = attention_einsum(q, k, v)
            logits = scores[:, :h]
        else:
            out = jax.nn.dot_product_attention(q, k, v, implementation=impl)  # [B, N, heads, head_dim]
            logits = None
        out = dense(d, ("heads", "embed"), xavier, self.dtype, name="proj")(out.reshape(b, n, d))
        if not h:
            return out
        if logits is None:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q[:, :, :h].astype(jnp.float32),
                                k[:, :, :h].astype(jnp.float32)) / math.sqrt(d // self.heads)
        return out, logits


def attention_einsum(q, k, v):
    """softmax(q k^T / sqrt(head_dim)) v with the heads moved before the tokens, as two batched
    einsums over [B, heads, N, head_dim] (`model.attention='einsum'`). q, k, v: [B, N, heads,
    head_dim]. Returns (out [B, N, heads, head_dim] in v's dtype, scaled scores [B, heads, N, N]
    float32). The same numbers as jax.nn.dot_product_attention's 'xla' path (float32 scores and
    softmax), laid out so that XLA:CPU runs the batched products without per-head copies:
    `bench/cpu_attention.py` times both."""
    qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    scores = jnp.einsum("bhqd,bhkd->bhqk", qh, kh, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs, vh), 1, 2), scores


class Mlp(nn.Module):
    hidden: int
    ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(int(self.hidden * self.ratio), ("embed", "mlp"), xavier, self.dtype, name="fc1")(x)
        h = nn.gelu(h, approximate=True)
        return dense(self.hidden, ("mlp", "embed"), xavier, self.dtype, name="fc2")(h)


class SiTBlock(nn.Module):
    """adaLN-Zero block; with `logit_heads` > 0 returns (x, attention logits [B, logit_heads, N, N])."""
    hidden: int
    heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    attention: str | None = None
    logit_heads: int = 0

    @nn.compact
    def __call__(self, x, c):
        mod = dense(6 * self.hidden, ("embed", "adaln"), zeros, self.dtype, name="adaLN_modulation")(nn.silu(c))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
        h = modulate(layer_norm()(x), shift_msa, scale_msa)
        a = Attention(self.hidden, self.heads, self.dtype, self.attention, self.logit_heads, name="attn")(h)
        a, logits = a if self.logit_heads else (a, None)
        x = x + gate_msa[:, None] * a
        h = modulate(layer_norm()(x), shift_mlp, scale_mlp)
        x = x + gate_mlp[:, None] * Mlp(self.hidden, self.mlp_ratio, self.dtype, name="mlp")(h)
        return (x, logits) if self.logit_heads else x


class _ScanBody(SiTBlock):
    """SiTBlock with the (carry, output) signature nn.scan expects (the attention logits, if any, as output)."""

    def __call__(self, x, c):
        out = super().__call__(x, c)
        return out if self.logit_heads else (out, None)


def block_segments(depth: int, targets: Sequence[Target] = ()) -> list[tuple[int, int]]:
    """Runs of blocks `[start, end)` (0-based) between tap points; with `scan`, each run is one
    nn.scan whose params are stacked on a leading axis, so every tap output stays available. A block
    whose attention is aligned (kind='attention', tap 'block<N>') is a run of its own."""
    cuts = {0, depth} | {tap_depth(s) for s in targets}
    cuts |= {tap_depth(s) - 1 for s in targets if s.kind == "attention"}
    cuts = sorted(cuts)
    return list(zip(cuts[:-1], cuts[1:]))


def attention_heads(targets: Sequence[Target]) -> dict[int, int]:
    """{block N (1-based): heads whose attention logits it must return} of the attention targets."""
    out: dict[int, int] = {}
    for s in targets:
        if s.kind == "attention":
            out[tap_depth(s)] = max(out.get(tap_depth(s), 0), s.heads)
    return out


def entangled(targets: Sequence[Target]) -> Target | None:
    """REG's class-token target (entangle > 0), or None."""
    found = [s for s in targets if s.entangle > 0]
    if len(found) > 1:
        raise ValueError(f"targets {[s.name for s in found]}: only one target can be REG's input token (entangle > 0)")
    return found[0] if found else None


def segment_name(start: int, end: int) -> str:
    return f"blocks_{start}_to_{end - 1}"


def stack_blocks(params: Mapping[str, Any], segments: Sequence[tuple[int, int]]) -> dict:
    """Per-block params (`blocks_i`) -> scanned layout (`blocks_<a>_to_<b>`, leading axis = block)."""
    out = {k: v for k, v in params.items() if not k.startswith("blocks_")}
    for a, b in segments:
        out[segment_name(a, b)] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"blocks_{i}"] for i in range(a, b)])
    return out


def unstack_blocks(params: Mapping[str, Any], segments: Sequence[tuple[int, int]]) -> dict:
    """The inverse of `stack_blocks`."""
    out = {k: v for k, v in params.items() if not k.startswith("blocks_")}
    for a, b in segments:
        seg = params[segment_name(a, b)]
        for i in range(a, b):
            out[f"blocks_{i}"] = jax.tree.map(lambda x: x[i - a], seg)
    return out


class FinalLayer(nn.Module):
    """adaLN + linear to the patch outputs. With `cls_dim` > 0 (REG) token 0 is the class token: the
    patches [B, T-1, out_dim] come from tokens 1.. and its velocity [B, cls_dim] from `linear_cls`
    (zero-initialised, as `linear`) on token 0; returns (patches, class velocity)."""
    hidden: int
    out_dim: int
    dtype: Any = jnp.float32
    cls_dim: int = 0

    @nn.compact
    def __call__(self, x, c):
        mod = dense(2 * self.hidden, ("embed", "adaln"), zeros, self.dtype, name="adaLN_modulation")(nn.silu(c))
        shift, scale = jnp.split(mod, 2, axis=-1)
        x = modulate(layer_norm()(x), shift, scale)
        if not self.cls_dim:
            return dense(self.out_dim, ("embed", "patch"), zeros, self.dtype, name="linear")(x)
        patches = dense(self.out_dim, ("embed", "patch"), zeros, self.dtype, name="linear")(x[:, 1:])
        return patches, dense(self.cls_dim, ("embed", "target"), zeros, self.dtype, name="linear_cls")(x[:, 0])


class SiT(nn.Module):
    """SiT with REED taps. See the module docstring for shapes."""
    input_size: int
    in_channels: int
    patch_size: int
    depth: int
    hidden: int
    heads: int
    num_classes: int
    mlp_ratio: float = 4.0
    label_dropout: float = 0.1
    targets: Sequence[Target] = ()
    projector_width: int = 2048
    dtype: Any = jnp.float32  # compute dtype; params stay float32, projector/alignment math float32
    remat: str = "none"  # per-block rematerialisation: one of REMAT_POLICIES
    attention: str | None = None
    scan: bool = False  # nn.scan over the runs of blocks between taps (params stacked: see stack_blocks)

    def setup(self):
        if self.input_size % self.patch_size:
            raise ValueError(f"model.patch_size={self.patch_size} does not divide the input size {self.input_size}")
        for spec in self.targets:
            if not 1 <= tap_depth(spec) <= self.depth:
                raise ValueError(f"targets.{spec.name}.tap={spec.tap!r} is outside block1..block{self.depth}")
        p = self.patch_size
        self.x_embedder = nn.Conv(self.hidden, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                                  kernel_init=nn.with_logical_partitioning(patch_init, (None, None, "patch_in", "embed")),
                                  bias_init=nn.with_logical_partitioning(zeros, ("embed",)))
        self.t_embedder = TimestepEmbedder(self.hidden, dtype=self.dtype)
        self.y_embedder = LabelEmbedder(self.num_classes, self.hidden, self.label_dropout, self.dtype)
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"model.remat={self.remat!r} is not one of {tuple(REMAT_POLICIES)}")
        args = (self.hidden, self.heads, self.mlp_ratio, self.dtype, self.attention)
        policy = REMAT_POLICIES[self.remat]
        heads = attention_heads(self.targets)  # block (1-based) -> heads whose attention logits it returns
        for spec in self.targets:
            if spec.kind == "attention" and not 1 <= spec.heads <= self.heads:
                raise ValueError(f"targets.{spec.name}.heads={spec.heads}: the model has {self.heads} heads")
        if self.scan:
            body = _ScanBody if self.remat == "none" else nn.remat(_ScanBody, policy=policy, prevent_cse=False)
            self.segments = block_segments(self.depth, self.targets)
            self.blocks = [nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True},
                                   in_axes=nn.broadcast, length=b - a, metadata_params={nn.PARTITION_NAME: "layers"}
                                   )(*args, heads.get(b, 0) if b - a == 1 else 0, name=segment_name(a, b))
                           for a, b in self.segments]
        else:
            block = SiTBlock if self.remat == "none" else nn.remat(SiTBlock, policy=policy)
            self.segments = [(i, i + 1) for i in range(self.depth)]
            self.blocks = [block(*args, heads.get(i + 1, 0), name=f"blocks_{i}") for i in range(self.depth)]
        reg = entangled(self.targets)
        if reg is not None:  # REG's class token in: Linear (xavier, zero bias) + LayerNorm, as the reference
            self.cls_embedder = dense(self.hidden, ("target", "embed"), xavier, self.dtype, name="cls_embedder")
            self.cls_norm = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="cls_norm")
        self.final_layer = FinalLayer(self.hidden, p * p * self.in_channels, self.dtype, reg.dim if reg else 0)
        self.projectors = {s.name: (ConvProjector(s.dim, name=f"projectors_{s.name}") if s.projector == "conv" else
                                    Projector(s.proj_width or self.projector_width, s.dim, name=f"projectors_{s.name}"))
                           for s in self.targets if s.kind == "features"}

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    def unpatchify(self, x):
        """[B, T, p*p*C] -> [B, H, W, C]; token channels ordered (p, q, c) as in the reference."""
        b, g, p, c = x.shape[0], self.grid_size, self.patch_size, self.in_channels
        x = x.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, g * p, g * p, c)

    def __call__(self, x, t, y, train: bool = False, with_projectors: bool = True, cls=None):
        """x: [B, H, W, C], t: [B] in [0, 1], y: [B] int -> (velocity [B, H, W, C], {name: features}).

        Attention targets get their tap block's attention logits [B, heads, T, T] (patch tokens only).
        REG (a target with entangle > 0): `cls` [B, E] is the noisy class token, prepended as token 0
        with no position embedding; the velocity is then (patch velocity [B, H, W, C], class-token
        velocity [B, E]), token targets see the patch tokens, and the entangled target token 0."""
        h = self.x_embedder(x.astype(self.dtype))
        b = h.shape[0]
        h = h.reshape(b, -1, self.hidden) + jnp.asarray(sincos_2d(self.hidden, self.grid_size), self.dtype)
        c = self.t_embedder(t) + self.y_embedder(y, train)
        reg = entangled(self.targets)
        if reg is not None:
            if cls is None or cls.shape != (b, reg.dim):
                raise ValueError(f"REG (targets.{reg.name}.entangle={reg.entangle}): the model needs the noisy class "
                                 f"token cls [{b}, {reg.dim}], got {None if cls is None else cls.shape}")
            e = self.cls_norm(self.cls_embedder(cls.astype(self.dtype)))
            h = jnp.concatenate([e[:, None], h], axis=1)
        first = 1 if reg is not None else 0  # the patch tokens start here
        taps, logits = {}, {}
        for (_, end), block in zip(self.segments, self.blocks):
            h = block(h, c)
            if self.scan:
                h, out = h
                if out is not None:
                    logits[end] = out[0]  # a run of one block: its stacked output
            elif isinstance(h, tuple):
                h, logits[end] = h
            taps[end] = h
        feats = {}
        if with_projectors:
            for spec in self.targets:
                n = tap_depth(spec)
                if spec.kind == "attention":
                    feats[spec.name] = logits[n][:, :spec.heads, first:, first:]
                    continue
                tap = taps[n].astype(jnp.float32)
                if spec.pooled:
                    tap = tap[:, 0] if reg is not None and spec.name == reg.name else tap[:, first:].mean(axis=1)
                else:
                    tap = tap[:, first:]
                feats[spec.name] = self.projectors[spec.name](tap)
        out = self.final_layer(h, c)
        if reg is not None:
            patches, v_cls = out
            return (self.unpatchify(patches).astype(jnp.float32), v_cls.astype(jnp.float32)), feats
        return self.unpatchify(out).astype(jnp.float32), feats


def class_token_input(model: SiT, batch: int):
    """{'cls': zeros [batch, E]} for a REG model (its forward needs the class token), else {}."""
    reg = entangled(model.targets)
    return {"cls": jnp.zeros((batch, reg.dim))} if reg is not None else {}


def _example_inputs(model: SiT):
    return (jnp.zeros((1, model.input_size, model.input_size, model.in_channels)), jnp.zeros((1,)),
            jnp.zeros((1,), jnp.int32))


def init_params(model: SiT, rng: jax.Array, inputs=None, **kw) -> dict:
    """Plain (unboxed) params. rng: the 'params' key (label dropout gets a fold of it); inputs:
    optional (x, t, y) to init with (default: one zero example)."""
    x, t, y = inputs if inputs is not None else _example_inputs(model)
    rngs = {"params": rng, "label_dropout": jax.random.fold_in(rng, 1)}
    return nn.unbox(model.init(rngs, x, t, y, **class_token_input(model, x.shape[0]), **kw)["params"])


def logical_specs(model: SiT) -> dict:
    """The logical axis names of every param: a tree like the params of PartitionSpecs."""
    boxed = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, *_example_inputs(model),
                                              **class_token_input(model, 1))["params"])
    return nn.get_partition_spec(boxed)


def build_sit(model_cfg: Mapping[str, Any], data_shape: Sequence[int], num_classes: int,
              targets: Sequence[Target] = ()) -> SiT:
    """SiT from a `config.model` block and the data shape `[H, W, C]`."""
    h, w, c = data_shape
    if h != w:
        raise ValueError(f"SiT needs square inputs, data shape is {tuple(data_shape)}")
    return SiT(input_size=h, in_channels=c, patch_size=model_cfg["patch_size"], depth=model_cfg["depth"],
               hidden=model_cfg["hidden"], heads=model_cfg["heads"], num_classes=num_classes,
               mlp_ratio=model_cfg.get("mlp_ratio", 4.0), label_dropout=model_cfg.get("label_dropout", 0.1),
               targets=tuple(targets), projector_width=model_cfg.get("projector_width", 2048),
               dtype=jnp.dtype(model_cfg.get("dtype", "float32")), remat=model_cfg.get("remat", "none"),
               attention=model_cfg.get("attention") or None, scan=bool(model_cfg.get("scan", False)))
