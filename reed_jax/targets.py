"""One description of an alignment target, shared by every track.

A target is a frozen representation of each clean sample (a shard field `target/<name>`, or an
encoder run inside the step) that the backbone's features at one tap point are projected onto and
aligned with (negative cosine). Every track reads the same keys (`template()`):

    tap         where the backbone's features are taken: images 'block<N>' (after SiT block N,
                1-based), proteins 'encoder_nodes', 'decoder2_edges', ... (protein.model.tap_names),
                molecules 'layer<N>' (after backbone layer N, 1-based)
    pooled      False: one target per token/residue [T, dim]; True: one vector per sample [dim],
                aligned with the tap's features pooled over tokens (images: their mean; molecules:
                their sum over real atoms, the reference's readout; proteins: never)
    dim         target width (must match the shards)
    proj_width  projector hidden width; 0 = model.projector_width
    projector   'mlp' (REPA/REED) or 'conv' (iREPA: a 3x3 convolution on the image token grid)
    spatial_norm  iREPA: the target tokens spatially normalised before the cosine (objective.spatial_normalize)
    kind        'features' (the above) or 'attention' (HASTE: the backbone's attention logits at the tap
                block, its first `heads` heads, against the teacher's row-stochastic attention maps
                [heads, T, T] by cross-entropy; the teacher is an encoder layer's attention,
                `encoder_layer`, or encoder='affinity': the softmax of the cosine affinities of another
                target's tokens, `affinity_of`, for encoders without attention)
    entangle    REG: > 0 makes this pooled target a noised extra input token denoised with the data,
                its velocity loss weighted by `entangle` (images only)
    coeff, noise_weight, cutoff_lo/hi   the loss weight c_k and its noise-level weight a(t)
    encoder, weights, source, dtype     where the target comes from and how it is stored

`from_config(config)` turns the config's targets into `Target`s, the form the backbones take.
"""
from __future__ import annotations

import dataclasses

import ml_collections

PROJECTORS = ("mlp", "conv")
KINDS = ("features", "attention")


@dataclasses.dataclass(frozen=True)
class Target:
    """One target as a backbone sees it: `name` keys the projected output; `tap` names the feature;
    `pooled` projects the pooled features [B, D] instead of every token [B, T, D]; `dim` is the
    target width; `proj_width` the projector's hidden width (0 = the backbone's default)."""
    name: str
    tap: str
    pooled: bool
    dim: int
    proj_width: int = 0
    projector: str = "mlp"
    kind: str = "features"
    heads: int = 0
    entangle: float = 0.0


def template() -> ml_collections.ConfigDict:
    """The keys of one `config.targets.<name>` block, with their defaults."""
    return ml_collections.ConfigDict(dict(
        tap="",                # where the backbone's features are aligned: images 'block<N>' (after SiT block N,
                               # 1-based); proteins a reed_jax/protein/mpnn.py feature (encoder_nodes, decoder2_nodes,
                               # decoder2_edges, ...); molecules 'layer<N>'
        pooled=False,          # False: projector on every token/residue; True: on the pooled features (images: the
                               # token mean; molecules: the sum over real atoms, required there)
        dim=768,               # target feature width (must match the shards)
        proj_width=0,          # projector hidden width; 0 = model.projector_width
        projector="mlp",       # 'mlp': the per-token MLP (REPA/REED); 'conv': iREPA's 3x3 convolution on the token
                               # grid (image token targets)
        spatial_norm=False,    # iREPA: target tokens minus their image's mean token, each channel divided by its
                               # std over the tokens, before the cosine (token targets)
        kind="features",       # 'features': projected features against the target (cosine); 'attention': HASTE's
                               # attention alignment at the tap block (images; see the module docstring)
        heads=0,               # kind='attention': the backbone's first `heads` heads are aligned, head h to the
                               # teacher's head h (or all to the one affinity map); the target is [heads, T, T]
        encoder_layer=0,       # kind='attention' with an image encoder: whose attention (block, 1-based)
        affinity_of="",        # encoder='affinity': the token target whose cosine affinities make the teacher map
        entangle=0.0,          # REG (images, pooled targets): > 0 feeds this target, noised with the sample's t,
                               # as an extra input token and adds its velocity loss with this weight (REG: 0.03)
        coeff=1.0,             # c_k; 0 switches the target off
        noise_weight="constant",  # a(t): one of objective.NOISE_WEIGHTS
        cutoff_lo=0.0, cutoff_hi=1.0,  # the window of noise_weight='cutoff'
        encoder="",            # one of reed_jax.models.encoders.names(): dinov2_vitb14, dinov2_vitb14_reg, ...,
                               # 'external' (imported from `source`), 'digits' (the embedded default),
                               # 'proteinmpnn', 'qm9_property'
        weights="",            # an image encoder's local weight file (.pth / .safetensors / .npz)
        source="",             # encoder='external': a dir mirroring the images (<synset>/<stem>.npy), an
                               # [N, dim] .npy in image order, or an .npz with 'embeddings' [N, dim] and 'index' [N]
        dtype="float32",       # storage dtype in the shards: float32 or bfloat16 (half the disk; cast to f32 in the step)
    ))


def make(**kw) -> ml_collections.ConfigDict:
    """A target block: the template with `kw` set."""
    t = template()
    t.update(kw)
    return t


def from_config(config) -> tuple[Target, ...]:
    """config.targets -> the backbone's Targets, proj_width resolved (0 -> model.projector_width)."""
    return tuple(Target(n, t.tap, bool(t.pooled), int(t.dim), int(t.proj_width or config.model.projector_width),
                        t.get("projector", "mlp"), t.get("kind", "features"), int(t.get("heads", 0)),
                        float(t.get("entangle", 0.0))) for n, t in config.targets.items())


def numbered_tap(tap: str, prefix: str, count: int, key: str) -> int:
    """'<prefix><N>' -> N, checked to lie in 1..count; `key` names the config key in the error."""
    from reed_jax.config import ConfigError

    digits = tap[len(prefix):] if isinstance(tap, str) and tap.startswith(prefix) else ""
    if not digits.isdigit() or not 1 <= int(digits) <= count:
        raise ConfigError(f"{key}={tap!r}: expected '{prefix}<N>' with N in 1..{count}")
    return int(digits)
