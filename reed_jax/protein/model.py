"""The protein backbone with REED projectors, and its losses (what the shared train step calls).

`ProteinREED` = `MPNN` + one projector per target on the named tap (see mpnn.py for the taps):
node taps give [B, L, z] per residue, edge taps (`encoder_edges`, `decoder_edges`,
`decoder{i}_edges`) give [B, L, k, z] per kNN edge. Projectors are Linear -> SiLU -> Linear with
PyTorch's default init (the reference builds them after its xavier loop).

`losses(config, model, params, batch, rng)` returns what `objective.combine` takes, per chain, so
that combine's batch means are the reference's token-weighted batch sums:
- gen [B]: the label-smoothed CE summed over chain b's real residues, times B * loss_tokens /
  (loss_norm * N), N = real residues in the whole batch. mean_b(gen) = (loss_tokens / loss_norm) *
  (token-mean CE). The reference sums the CE over a batch of ~loss_tokens = 20,000 tokens and
  divides by loss_norm = 2000, i.e. ~10x the token-mean CE; normalising by the batch's own token
  count keeps that balance against the alignment terms at any batch size (8 chains of ~150
  residues here, 20,000 tokens there);
- align {name: [B]}: chain b's summed -cos over its valid residues (or edges), times B / (valid
  residues or edges in the whole batch): mean_b is the reference's token-weighted batch mean, and a
  per-chain noise weight a(t_b) weighs each chain's tokens;
- the noise level [B] = 1 - t (1 = fully masked), objective.combine's convention.

Edge targets are stored at the teacher's edges (`target/<name>` [L, Kt, D] with
`target/<name>_idx` [L, Kt]) and gathered at the model's own kNN edges, which move with the
backbone noise; a model edge the teacher does not have is left out of the loss.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import objective, targets as targets_lib
from reed_jax.data import records
from reed_jax.protein import masked_diffusion, mpnn, residues


def tap_names(p) -> tuple[str, ...]:
    """Taps of a `config.protein` model."""
    return ("encoder_nodes", "encoder_edges", "decoder_edges") + tuple(
        f"decoder{i}_{kind}" for i in range(1, p.dec_layers + 1) for kind in ("nodes", "edges"))


def is_edge(tap: str) -> bool:
    return tap.endswith("_edges")


class TorchProjector(nn.Module):
    """[..., D] -> [..., z_dim]: Linear(D, width) -> SiLU -> Linear(width, z_dim), weights and biases
    U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear default, the reference's `build_mlp`). Param names as
    models.projector.Projector with one hidden layer (dense_0, dense_2)."""
    width: int
    z_dim: int

    @nn.compact
    def __call__(self, h):
        def torch_default(fan_in):
            bound = 1.0 / np.sqrt(fan_in)
            return lambda k, s, dtype=jnp.float32: jax.random.uniform(k, s, dtype, -bound, bound)

        for name, features in (("dense_0", self.width), ("dense_2", self.z_dim)):
            fan_in = h.shape[-1]
            h = nn.Dense(features, kernel_init=torch_default(fan_in), bias_init=torch_default(fan_in), name=name)(h)
            if name == "dense_0":
                h = nn.silu(h)
        return h


class ProteinREED(nn.Module):
    net: mpnn.MPNN
    targets: tuple[targets_lib.Target, ...] = ()

    @nn.compact
    def __call__(self, coords, mask, residue_idx, tokens, train: bool = False, with_projectors: bool = True):
        logits, taps = self.net(coords, mask, residue_idx, tokens, train)
        feats = {}
        if with_projectors:
            for t in self.targets:
                feats[t.name] = TorchProjector(t.proj_width, t.dim, name=f"projectors_{t.name}")(taps[t.tap])
        return logits, feats, taps["e_idx"]


def build_model(config) -> ProteinREED:
    p = config.protein
    net = mpnn.MPNN(hidden=config.model.hidden, encoder_layers=p.enc_layers, decoder_layers=p.dec_layers, k=p.k,
                    dropout=p.dropout, backbone_noise=p.backbone_noise, num_letters=p.num_classes,
                    decoder_edge_mlp=True, update_edge=p.update_edge, learnable_node=p.learnable_node)
    targets = targets_lib.from_config(config)
    return ProteinREED(net, targets)


def example_batch(config, batch: int = 1) -> dict:
    l = config.protein.max_length
    return {"coords": jnp.zeros((batch, l, 4, 3)), "mask": jnp.ones((batch, l)),
            "residue_idx": jnp.tile(jnp.arange(l), (batch, 1)), "tokens": jnp.zeros((batch, l), jnp.int32)}


def init_params(config, model: ProteinREED, rng: jax.Array) -> dict:
    b = example_batch(config)
    k_p, k_d, k_n = jax.random.split(rng, 3)
    coords = jax.random.normal(k_n, b["coords"].shape) * 10.0  # distinct points for the kNN
    return model.init({"params": k_p, "dropout": k_d, "noise": k_n}, coords, b["mask"], b["residue_idx"],
                      b["tokens"])["params"]


def standardize(x: jax.Array, valid: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Per-channel (last axis) standardisation with statistics over the valid entries of the batch,
    (x - mean) / (std + eps) as the reference's `repr_norm` (whose variance also counts every padded
    entry as (0 - mean)^2; ours counts valid entries only). x [..., D], valid [...] -> [..., D]."""
    w = valid[..., None].astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    axes = tuple(range(x.ndim - 1))
    mu = (x * w).sum(axes) / n
    var = (((x - mu) ** 2) * w).sum(axes) / n
    return (x - mu) / (jnp.sqrt(var) + eps)


def gather_edge_target(target: jax.Array, target_idx: jax.Array, e_idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Target at the teacher's edges [B, L, Kt, D] / [B, L, Kt] -> at the model's edges e_idx [B, L, k]:
    ([B, L, k, D], found [B, L, k])."""
    match = e_idx[..., :, None] == target_idx[..., None, :]  # [B, L, k, Kt]
    pos = jnp.argmax(match, -1)
    return jnp.take_along_axis(target, pos[..., None], axis=2), match.any(-1)


def alignment(pred: jax.Array, target: jax.Array, valid: jax.Array, standardize_targets: bool) -> jax.Array:
    """Token-weighted negative cosine: pred, target [B, *S, D], valid [B, *S] -> [B], chain b's summed -cos
    over its valid residues/edges times B / (valid entries in the batch), so the batch mean is the
    mean over every valid residue/edge of the batch (the reference's loss_repr), not over chains."""
    target = target.astype(jnp.float32)
    if standardize_targets:
        target = standardize(target, valid)
    b, d = pred.shape[0], pred.shape[-1]
    v = valid.reshape(b, -1).astype(jnp.float32)
    per_token = objective.alignment_loss(pred.reshape(b * v.shape[1], 1, d), target.reshape(b * v.shape[1], 1, d))
    return (per_token.reshape(b, -1) * v).sum(-1) * b / jnp.maximum(v.sum(), 1.0)


def generative(ce: jax.Array, mask: jax.Array, loss_tokens: float, loss_norm: float) -> jax.Array:
    """Per-chain generative loss [B] from per-residue CE [B, L] and mask [B, L]: chain b's summed CE times
    B * loss_tokens / (loss_norm * real residues in the batch); its batch mean is (loss_tokens / loss_norm)
    x the token-mean CE, the reference's sum / 2000 over a 20,000-token batch at any batch size."""
    m = mask.astype(jnp.float32)
    return (ce * m).sum(-1) * (ce.shape[0] * loss_tokens / loss_norm) / jnp.maximum(m.sum(), 1.0)


def losses(config, model: ProteinREED, params, batch, rng):
    p = config.protein
    k_c, k_d, k_n = jax.random.split(rng, 3)
    mask = batch["mask"].astype(jnp.float32)
    tokens = batch["tokens"]
    noisy, t_clean, _ = masked_diffusion.corrupt(k_c, tokens, mask, p.t_min, p.t_max)
    logits, feats, e_idx = model.apply({"params": params}, batch["coords"], mask, batch["residue_idx"], noisy,
                                       train=True, rngs={"dropout": k_d, "noise": k_n})
    ce = masked_diffusion.smoothed_cross_entropy(logits, tokens, p.label_smoothing)
    gen = generative(ce, mask, p.loss_tokens, p.loss_norm)
    align = {}
    node_valid = mask > 0
    edge_valid = node_valid[:, :, None] & (jax.vmap(lambda m, i: m[i])(mask, e_idx) > 0)
    for tgt in model.targets:
        y = batch[records.TARGET_PREFIX + tgt.name]
        if is_edge(tgt.tap):
            y, found = gather_edge_target(y, batch[records.TARGET_PREFIX + tgt.name + "_idx"], e_idx)
            align[tgt.name] = alignment(feats[tgt.name], y, edge_valid & found, p.standardize_targets)
        else:
            align[tgt.name] = alignment(feats[tgt.name], y, node_valid, p.standardize_targets)
    return gen, align, 1.0 - t_clean  # objective.combine's noise level: 1 = every residue masked


def logits_fn(model: ProteinREED, params, batch):
    """tokens [B, L] -> logits [B, L, C] on the batch's backbones (eval mode, no projectors)."""
    def fn(tokens):
        return model.apply({"params": params}, batch["coords"], batch["mask"], batch["residue_idx"], tokens,
                           with_projectors=False)[0]
    return fn


def native_tokens(batch) -> jax.Array:
    return jnp.where(batch["mask"] > 0, batch["tokens"], residues.X)


def check_data(config, schema: records.Schema, data_dir: str) -> None:
    """Protein shards: padded to protein.max_length, with every configured target of the right width."""
    l = config.protein.max_length
    for name, shape in (("coords", (l, 4, 3)), ("mask", (l,)), ("tokens", (l,)), ("residue_idx", (l,))):
        have = tuple(schema.field(name).shape)
        if have != shape:
            raise records.DataError(f"protein.max_length={l} expects field {name!r} of shape {shape}; shards in "
                                    f"{data_dir!r} hold {have} (precompute again with this max_length)")
    for n, t in config.targets.items():
        f = schema.field(records.TARGET_PREFIX + n)
        want = (l, None, t.dim) if is_edge(t.tap) else (l, t.dim)
        if len(f.shape) != len(want) or any(w is not None and w != h for w, h in zip(want, f.shape)):
            raise records.DataError(f"targets.{n} (tap {t.tap}) expects features of shape "
                                    f"{tuple('K' if w is None else w for w in want)}; field {f.name!r} in {data_dir!r} "
                                    f"has {tuple(f.shape)}")
        if is_edge(t.tap):
            schema.field(records.TARGET_PREFIX + n + "_idx")


def crop_fields(config) -> list[str]:
    """Fields with a leading residue axis (what length buckets crop): the chain and every target."""
    names = list(BATCH_FIELDS)
    for n, t in config.targets.items():
        names.append(records.TARGET_PREFIX + n)
        if is_edge(t.tap):
            names.append(records.TARGET_PREFIX + n + "_idx")
    return names


BATCH_FIELDS = ("coords", "mask", "residue_idx", "tokens")  # what the backbone reads of a chain


def pad_batches(d: dict, batch_size: int) -> list[dict]:
    """Stacked chains {field: [N, ...]} -> fixed-size device batches (pipeline.pad_batches)."""
    from reed_jax.data import pipeline

    return [{k: jnp.asarray(v) for k, v in b.items()} for b in pipeline.pad_batches(d, batch_size)]


def eval_batches(data_dir: str, split: str, batch_size: int) -> list[dict]:
    """Every chain of `split` in fixed-size batches of BATCH_FIELDS."""
    from reed_jax.data import pipeline

    return pad_batches(pipeline.read_all(data_dir, split, list(BATCH_FIELDS)), batch_size)
