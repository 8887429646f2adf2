"""Config schema, defaults and validation.

`base_config()` is the schema: every key a run may set, with its default. Config files start
from it and override values; `validate(config)` runs once at start-up, before any compute, and
raises `ConfigError` naming the offending key. Targets are a dict keyed by target name, each
shaped like `target_template()`; a target's name is also its shard field (`target/<name>`).
"""
from __future__ import annotations

from typing import Any

import ml_collections

from reed_jax.curriculum import DECAYS
from reed_jax.diffusion.interpolants import PATHS, TIME_SAMPLERS
from reed_jax.diffusion.samplers import SAMPLERS
from reed_jax.evaluation.frechet import METHODS as FRECHET_METHODS
from reed_jax.models.sit import REMAT_POLICIES, SIT_SIZES
from reed_jax.objective import NOISE_WEIGHTS

DATA_SOURCES = ("digits", "imagenet")
DATA_KINDS = ("pixels", "latents")


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key."""


def sit_model(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """`config.model` of a published size, e.g. sit_model('XL/2')."""
    size, patch = name.removeprefix("SiT-").split("/")
    if size not in SIT_SIZES:
        raise ConfigError(f"model: unknown SiT size {size!r}; expected one of {list(SIT_SIZES)}")
    depth, hidden, heads = SIT_SIZES[size]
    m = base_config().model
    m.update(dict(name=f"SiT-{size}/{patch}", depth=depth, hidden=hidden, heads=heads, patch_size=int(patch)))
    m.update(overrides)
    return m


def target_template() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        depth=8,               # tap after this block (1-based)
        pooled=False,          # False: projector on every token; True: on the token mean
        dim=768,               # target feature width (must match the shards)
        coeff=1.0,             # c_k; 0 switches the target off
        noise_weight="constant",  # a(t): one of objective.NOISE_WEIGHTS
        cutoff_lo=0.0, cutoff_hi=1.0,  # the window of noise_weight='cutoff'
        source="",             # precompute of image folders: '' = computed (dinov2); else imported embeddings:
                               # a dir mirroring the images (<synset>/<stem>.npy), an [N, dim] .npy in image
                               # order, or an .npz with 'embeddings' [N, dim] and 'index' [N]
    ))


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(
        source="digits",       # one of DATA_SOURCES
        dir="",                # shard directory; '' = <workdir>/data
        kind="pixels",         # 'pixels': field `image`; 'latents': field `moments` (VAE mean, std)
        latent_scale=0.18215,
        num_classes=10,
        image_shape=(8, 8, 1),  # [H, W, C] the model sees (latent shape for latents)
        num_shards=4,
        imagenet_dir="",       # source='imagenet': an image folder <dir>/<synset>/*.JPEG (the train split)
        image_size=256,        # source='imagenet': ADM center-crop size of the raw images
    )
    c.model = dict(name="custom", depth=4, hidden=128, heads=4, patch_size=2, mlp_ratio=4.0,
                   label_dropout=0.1, projector_width=2048,
                   dtype="float32",   # compute dtype: float32 or bfloat16 (params stay float32)
                   remat="none",      # none, full, dots, dots_no_batch (per block)
                   attention="",      # jax.nn.dot_product_attention implementation: '' (auto), xla, cudnn
                   scan=False)        # nn.scan over the blocks between taps (short compiles; stacked params)
    c.targets = ml_collections.ConfigDict()
    c.mesh = dict(data=-1, fsdp=1)  # device mesh; fsdp > 1 shards params/EMA/optimizer state
    c.diffusion = dict(path="linear", time_sampler="uniform")
    c.curriculum = dict(
        gen=dict(start=0, warmup=0, decay="constant", total_steps=0),
        align=dict(coeff=0.5, decay="constant", decay_steps=0))
    c.optim = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999)
    c.train = dict(batch_size=256, steps=1_000_000, log_every=100, eval_every=50_000,
                   checkpoint_every=10_000, keep_checkpoints=3, max_consecutive_skips=20)
    c.sample = dict(method="sde", num_steps=250, cfg_scale=1.0, guidance_lo=0.0, guidance_hi=1.0,
                    batch_size=256, grid_per_class=10)
    c.eval = dict(
        num_samples=1000,      # digits-FD / accuracy samples per evaluation (digits only)
        # FID / sFID / IS / precision-recall (--mode=evaluate, and in training every fid_every steps)
        inception_path="",     # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a converted .npz)
        reference="",          # reference batch .npz (arr_0 images and/or mu, sigma, mu_s, sigma_s)
        fid_samples=50_000,    # samples of --mode=evaluate
        fid_batch_size=0,      # sampling batch of the evaluation; 0 = sample.batch_size
        inception_batch_size=100,
        inception_size=299,    # Inception input size: 299 is the protocol (smaller only for fast tests)
        save_npz=False,        # also write samples.npz (arr_0, uint8 NHWC) for the official evaluator
        fid_every=0,           # in-training FID every this many steps (0 = off) ...
        fid_every_samples=10_000,  # ... on this many samples (FID-10K)
        frechet_method="sqrtm",  # 'sqrtm': scipy sqrtm as pytorch-fid/ADM (the protocol); 'eigh': same value, 5x faster
    )
    c.precompute = dict(encoder_steps=500, encoder_seed=1, fd_steps=800, fd_seed=2,  # digits encoders
                        vae_path="", vae_groups=32,          # source='imagenet': SD-VAE weights (diffusers names)
                        dinov2_path="", dinov2_heads=0,      # DINOv2 weights (hub or transformers); 0 = infer
                        dinov2_size=224, batch_size=64)      # DINOv2 input size; encoder batch
    return c


def _target(**kw) -> ml_collections.ConfigDict:
    t = target_template()
    t.update(kw)
    return t


def digits_config(variant: str = "reed") -> ml_collections.ConfigDict:
    """The embedded default: SiT on scikit-learn digits (8x8x1 pixels), trained in minutes on a CPU.

    reed: the digits encoder's 4x4 patch tokens (64-d) tapped after block 2 (coefficient 1.0)
    plus its pooled 128-d vector (the second "modality") on the token mean after block 3
    (coefficient 0.5); w_gen ramps in over the first 10% of training, w_align = 0.5 constant.
    repa: the token target only, constant weights. sit: no targets.
    """
    c = base_config()
    c.model.update(name="SiT-demo/2", depth=4, hidden=128, heads=4, patch_size=2, projector_width=256)
    c.optim.update(lr=1e-3, ema_decay=0.995)
    c.train.update(batch_size=64, steps=1000, log_every=50, eval_every=500, checkpoint_every=500)
    c.sample.update(method="sde", num_steps=50, batch_size=500, grid_per_class=10)
    c.eval.num_samples = 1000
    if variant not in ("reed", "repa", "sit"):
        raise ConfigError(f"digits config: unknown variant {variant!r}; expected reed, repa or sit")
    if variant in ("reed", "repa"):
        c.targets.digits_tokens = _target(depth=2, pooled=False, dim=64, coeff=1.0)
    if variant == "reed":
        c.targets.digits_pooled = _target(depth=3, pooled=True, dim=128, coeff=0.5)
        c.curriculum.gen.warmup = c.train.steps // 10
    return c


# Tap depths of the DINOv2 (token) and VLM (pooled) targets per SiT size. XL/L: 8 and 16 as
# published; B and S (12 blocks): DINOv2 at 4 as published for B, the VLM target at 8 (our choice: the
# published 16 does not exist in a 12-block model).
IMAGENET_TAPS = {"S": (4, 8), "B": (4, 8), "L": (8, 16), "XL": (8, 16)}


def imagenet_config(size: str, variant: str) -> ml_collections.ConfigDict:
    """ImageNet 256 (SD-VAE latents 32x32x4) with the published hyperparameters (METHOD.md section 2).

    sit: no targets. repa: DINOv2-B/14 patch tokens (256 x 768), coefficient 1.0, w_align 0.5.
    reed: + the VLM embedding (3584, pooled) with coefficient 0.5 and w_gen = min(step/50K, 1).
    """
    if variant not in ("sit", "repa", "reed"):
        raise ConfigError(f"imagenet config: unknown variant {variant!r}; expected sit, repa or reed")
    c = base_config()
    c.data.update(source="imagenet", kind="latents", image_shape=(32, 32, 4), num_classes=1000, num_shards=1024)
    c.model = sit_model(f"{size}/2")
    c.optim.update(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999)
    c.train.update(batch_size=256, steps=1_000_000 if variant == "reed" else 4_000_000, log_every=100,
                   eval_every=50_000, checkpoint_every=10_000, keep_checkpoints=3)
    c.sample.update(method="sde", num_steps=250, cfg_scale=1.0, guidance_lo=0.0, guidance_hi=1.0, batch_size=256)
    dino_depth, vlm_depth = IMAGENET_TAPS[size]
    if variant in ("repa", "reed"):
        c.targets.dinov2 = _target(depth=dino_depth, pooled=False, dim=768, coeff=1.0)
        c.curriculum.align.coeff = 0.5
    if variant == "reed":
        c.targets.vlm = _target(depth=vlm_depth, pooled=True, dim=3584, coeff=0.5)
        c.curriculum.gen.warmup = 50_000
    return c


def _check_keys(cfg, ref, prefix: str) -> None:
    for k in cfg.keys():
        key = f"{prefix}{k}"
        if k not in ref:
            raise ConfigError(f"unknown config key {key!r}")
        if isinstance(ref[k], ml_collections.ConfigDict) and ref[k].keys():
            if not isinstance(cfg[k], ml_collections.ConfigDict):
                raise ConfigError(f"config key {key!r} must be a block with keys {sorted(ref[k].keys())}")
            _check_keys(cfg[k], ref[k], key + ".")


def _one_of(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {tuple(allowed)}")


def validate(c: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raise ConfigError naming the first key that cannot run."""
    ref = base_config()
    _check_keys({k: v for k, v in c.items() if k != "targets"}, ref, "")
    for name, t in c.targets.items():
        _check_keys(t, target_template(), f"targets.{name}.")
        if not 1 <= t.depth <= c.model.depth:
            raise ConfigError(f"targets.{name}.depth={t.depth} is outside 1..model.depth={c.model.depth}")
        if t.coeff < 0:
            raise ConfigError(f"targets.{name}.coeff={t.coeff} must be >= 0")
        if t.dim <= 0:
            raise ConfigError(f"targets.{name}.dim={t.dim} must be positive")
        _one_of(t.noise_weight, NOISE_WEIGHTS, f"targets.{name}.noise_weight")
    _one_of(c.data.source, DATA_SOURCES, "data.source")
    _one_of(c.data.kind, DATA_KINDS, "data.kind")
    _one_of(c.diffusion.path, PATHS, "diffusion.path")
    _one_of(c.diffusion.time_sampler, TIME_SAMPLERS, "diffusion.time_sampler")
    _one_of(c.curriculum.gen.decay, DECAYS, "curriculum.gen.decay")
    _one_of(c.curriculum.align.decay, DECAYS, "curriculum.align.decay")
    _one_of(c.sample.method, SAMPLERS, "sample.method")
    m = c.model
    _one_of(m.dtype, ("float32", "bfloat16"), "model.dtype")
    _one_of(m.remat, tuple(REMAT_POLICIES), "model.remat")
    _one_of(m.attention, ("", "xla", "cudnn"), "model.attention")
    if m.hidden % m.heads:
        raise ConfigError(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}")
    if m.hidden % 4:
        raise ConfigError(f"model.hidden={m.hidden} must be divisible by 4 (2D sin-cos positions)")
    h, w, _ = c.data.image_shape
    if h != w or h % m.patch_size:
        raise ConfigError(f"model.patch_size={m.patch_size} must divide the square data.image_shape={tuple(c.data.image_shape)}")
    for key, bs in (("train.batch_size", c.train.batch_size), ("sample.batch_size", c.sample.batch_size)):
        if bs <= 0 or bs % num_devices:
            raise ConfigError(f"{key}={bs} must be a positive multiple of the device count {num_devices}")
    for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips"):
        if c.train[key] <= 0:
            raise ConfigError(f"train.{key}={c.train[key]} must be positive")
    e = c.eval
    if e.inception_size < 75:
        raise ConfigError(f"eval.inception_size={e.inception_size} must be >= 75 (299 is the FID protocol)")
    for key in ("fid_samples", "inception_batch_size", "fid_every_samples"):
        if e[key] <= 0:
            raise ConfigError(f"eval.{key}={e[key]} must be positive")
    fid_bs = e.fid_batch_size or c.sample.batch_size
    if fid_bs <= 0 or fid_bs % num_devices:
        raise ConfigError(f"eval.fid_batch_size={fid_bs} must be a positive multiple of the device count {num_devices}")
    _one_of(e.frechet_method, FRECHET_METHODS, "eval.frechet_method")
    if e.fid_every < 0:
        raise ConfigError(f"eval.fid_every={e.fid_every} must be >= 0 (0 = off)")
    if not 0.0 <= c.optim.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay={c.optim.ema_decay} must be in [0, 1)")
    g = c.curriculum.gen
    if g.decay != "constant" and g.total_steps <= g.start + g.warmup:
        raise ConfigError(f"curriculum.gen.total_steps={g.total_steps} must exceed start + warmup for decay {g.decay!r}")
    a = c.curriculum.align
    if a.decay != "constant" and a.decay_steps <= 0:
        raise ConfigError(f"curriculum.align.decay_steps={a.decay_steps} must be positive for decay {a.decay!r}")


def token_count(c: ml_collections.ConfigDict) -> int:
    return (c.data.image_shape[0] // c.model.patch_size) ** 2


def target_shapes(c: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """Shard shape each configured target must have: [T, dim] (tokens) or [dim] (pooled)."""
    return {n: ((t.dim,) if t.pooled else (token_count(c), t.dim)) for n, t in c.targets.items()}
