"""The image track's config: its keys (in the shared data/model/sample/eval blocks, and the encoder,
diffusion and precompute blocks), their validation, and the presets (`digits_config`, the embedded
default; `imagenet_config`, ImageNet 256 with the published settings; `sit_model`)."""
from __future__ import annotations

from typing import Any

import ml_collections

from reed_jax import config as config_lib, targets
from reed_jax.config import one_of
from reed_jax.image import latents
from reed_jax.image.frechet import METHODS as FRECHET_METHODS
from reed_jax.image.interpolants import PATHS, TIME_SAMPLERS
from reed_jax.image.samplers import SAMPLERS
from reed_jax.image.sit import REMAT_POLICIES, SIT_SIZES, TAP_PREFIX

SOURCES = ("digits", "imagenet")
IMAGE_SOURCES = ("folder", "tfds")
DIGITS_FIELDS = ("digits_tokens", "digits_pooled")
DIGITS_VARIANTS = ("reed", "repa", "irepa", "haste", "reg", "sit")  # what the digits source stores, for every variant
ENCODER_MODES = ("precomputed", "online")
DATA_KINDS = ("pixels", "latents")
POS_RESAMPLE = ("reference", "hub")  # precompute.dinov2_pos_resample


def extend_schema(c: ml_collections.ConfigDict) -> None:
    """The image track's keys, added to the schema `c`."""
    c.data.update(dict(
        kind="pixels",         # 'pixels': field `image`; 'latents': field `moments` (VAE mean, std)
        latent_scale=0.18215,
        tokenizer="sd_vae_f8c4",  # latents: the tokenizer (reed_jax.image.latents registry: architecture, weight
                                  # names, normalisation); data.latent_scale and image_shape[-1] must match it
        num_classes=10,
        image_shape=(8, 8, 1),  # [H, W, C] the model sees (latent shape for latents)
        image_source="folder",  # source='imagenet': 'folder' (imagenet_dir) or 'tfds' (tfds_name)
        imagenet_dir="",       # image_source='folder': <dir>/<synset>/*.JPEG (the train split)
        tfds_name="imagenet2012",  # image_source='tfds': a tfds image-classification dataset ...
        tfds_dir="",           # ... its tfds data_dir ('' = tfds' default, ~/tensorflow_datasets) ...
        tfds_split="train",
        tfds_manual_dir="",    # ... and, to build it once from the manual-download tarballs, their folder
        image_size=256,        # source='imagenet': ADM center-crop size of the raw images
    ))
    c.encoder = dict(mode="precomputed")  # 'online': image encoders run inside the train step on stored
                                          # crops (field `pixels`) instead of storing their features
    c.model.update(dict(depth=4, heads=4, patch_size=2, mlp_ratio=4.0, label_dropout=0.1,
                        dtype="float32",   # compute dtype: float32 or bfloat16 (params stay float32)
                        remat="none",      # none, full, dots, dots_no_batch (per block)
                        attention="",      # '' (einsum on CPU, else jax's), xla, cudnn (jax.nn's), einsum
                        scan=False))       # nn.scan over the blocks between taps (short compiles; stacked params)
    c.diffusion = dict(path="linear", time_sampler="uniform")
    c.sample.update(dict(method="sde", num_steps=250, cfg_scale=1.0, guidance_lo=0.0, guidance_hi=1.0,
                         grid_per_class=10,
                         grid_classes=0))  # classes in sample grids, spread over the labels (0 = all)
    c.eval.update(dict(
        num_samples=1000,      # digits-FD / accuracy samples per evaluation (digits only)
        # FID / sFID / IS / precision-recall (--mode=evaluate, and in training every fid_every steps)
        inception_path="",     # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a converted .npz)
        reference="",          # reference batch .npz (arr_0 images and/or mu, sigma, mu_s, sigma_s)
        fid_samples=50_000,    # samples of --mode=evaluate
        fid_batch_size=0,      # sampling batch of the evaluation; 0 = sample.batch_size
        inception_batch_size=100,
        inception_size=299,    # Inception input size: 299 is the protocol (smaller only for fast tests)
        save_npz=False,        # also write samples.npz (arr_0, uint8 NHWC) for the official evaluator
        vae_decoder_path="",   # latents: the SD-VAE whose decoder renders samples ('' = precompute.vae_path);
                               # the protocol encodes with sd-vae-ft-mse and decodes with sd-vae-ft-ema
        fid_every=0,           # in-training FID every this many steps (0 = off) ...
        fid_every_samples=10_000,  # ... on this many samples (FID-10K)
        frechet_method="sqrtm",  # 'sqrtm': scipy sqrtm as pytorch-fid/ADM (the protocol); 'eigh': same value, 5x faster
        class_balanced=False,  # FID samples with exactly N / num_classes per class (50 per class for FID-50K on
                               # ImageNet), as several 2025 papers report beside the random-label protocol
    ))
    c.precompute = dict(encoder_steps=500, encoder_seed=1, fd_steps=800, fd_seed=2,  # digits encoders
                        vae_path="", vae_groups=32,          # source='imagenet': SD-VAE weights (diffusers names)
                        dinov2_heads=0,                      # DINOv2 heads; 0 = the released size's
                        dinov2_size=224, batch_size=64,      # DINOv2 input size; encoder batch
                        store_attention=False,               # store attention targets' maps in the shards (HASTE;
                                                             # [heads, T, T] per image: see the estimate in the error)
                        dinov2_pos_resample="reference")     # 'reference': the 37x37 position embedding resampled
    # to the patch grid once, bicubic with antialiasing, as REPA/REED load DINOv2 (timm resample_abs_pos_embed);
    # 'hub': DINOv2's own forward interpolation (scale (n + 0.1) / 37, no antialiasing; '_reg': to the size, antialiased)


def validate(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raise ConfigError naming the first image key (or target key) that cannot run."""
    from reed_jax.models import encoders

    for name, t in c.targets.items():
        key = f"targets.{name}"
        one_of(t.encoder, encoders.image_encoders() + (encoders.EXTERNAL, encoders.DIGITS, encoders.AFFINITY),
               f"{key}.encoder")
        if t.encoder != encoders.AFFINITY and (t.encoder == encoders.DIGITS) != (c.data.source == "digits"):
            raise config_lib.ConfigError(f"{key}.encoder={t.encoder!r} does not fit data.source={c.data.source!r} "
                                         f"(the digits encoder is the digits source's, and only it)")
        if t.encoder == encoders.DIGITS and name not in DIGITS_FIELDS:
            raise config_lib.ConfigError(f"{key}: the digits encoder's outputs are named {DIGITS_FIELDS}")
        targets.numbered_tap(t.tap, TAP_PREFIX, c.model.depth, f"{key}.tap")
        _validate_family(c, name, t)
    entangled = [n for n, t in c.targets.items() if t.entangle]
    if len(entangled) > 1:
        raise config_lib.ConfigError(f"targets {entangled}: entangle > 0 on more than one target; REG has one class "
                                     f"token")
    one_of(c.data.image_source, IMAGE_SOURCES, "data.image_source")
    one_of(c.precompute.dinov2_pos_resample, POS_RESAMPLE, "precompute.dinov2_pos_resample")
    one_of(c.encoder.mode, ENCODER_MODES, "encoder.mode")
    if c.encoder.mode == "online" and c.data.source != "imagenet":
        raise config_lib.ConfigError(f"encoder.mode='online' runs image encoders on stored crops: it needs "
                                     f"data.source='imagenet', not {c.data.source!r}")
    one_of(c.data.kind, DATA_KINDS, "data.kind")
    one_of(c.data.tokenizer, latents.names(), "data.tokenizer")
    tok = latents.REGISTRY[c.data.tokenizer]
    if c.data.kind == "latents" and c.data.image_shape[-1] != tok.latent:
        raise config_lib.ConfigError(f"data.image_shape={tuple(c.data.image_shape)} has {c.data.image_shape[-1]} "
                                     f"channels; data.tokenizer={tok.name!r} gives {tok.latent}")
    if c.data.kind == "latents" and abs(c.data.latent_scale - tok.scale) > 1e-9:
        raise config_lib.ConfigError(f"data.latent_scale={c.data.latent_scale} is not data.tokenizer={tok.name!r}'s "
                                     f"published latent scale {tok.scale}")
    one_of(c.diffusion.path, PATHS, "diffusion.path")
    one_of(c.diffusion.time_sampler, TIME_SAMPLERS, "diffusion.time_sampler")
    one_of(c.sample.method, SAMPLERS, "sample.method")
    smp = c.sample
    if smp.cfg_scale < 1.0 or not 0.0 <= smp.guidance_lo <= smp.guidance_hi <= 1.0:
        raise config_lib.ConfigError(f"sample.cfg_scale={smp.cfg_scale}, guidance_lo={smp.guidance_lo}, guidance_hi="
                                     f"{smp.guidance_hi}: need cfg_scale >= 1 (1 = no guidance) and 0 <= lo <= hi <= 1")
    m = c.model
    one_of(m.dtype, ("float32", "bfloat16"), "model.dtype")
    one_of(m.remat, tuple(REMAT_POLICIES), "model.remat")
    one_of(m.attention, ("", "xla", "cudnn", "einsum"), "model.attention")
    if m.hidden % m.heads:
        raise config_lib.ConfigError(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}")
    if m.hidden % 4:
        raise config_lib.ConfigError(f"model.hidden={m.hidden} must be divisible by 4 (2D sin-cos positions)")
    h, w, _ = c.data.image_shape
    if h != w or h % m.patch_size:
        raise config_lib.ConfigError(f"model.patch_size={m.patch_size} must divide the square data.image_shape="
                                     f"{tuple(c.data.image_shape)}")
    e = c.eval
    if e.inception_size < 75:
        raise config_lib.ConfigError(f"eval.inception_size={e.inception_size} must be >= 75 (299 is the FID protocol)")
    for key in ("fid_samples", "inception_batch_size", "fid_every_samples"):
        if e[key] <= 0:
            raise config_lib.ConfigError(f"eval.{key}={e[key]} must be positive")
    fid_bs = e.fid_batch_size or c.sample.batch_size
    if fid_bs <= 0 or fid_bs % num_devices:
        raise config_lib.ConfigError(f"eval.fid_batch_size={fid_bs} must be a positive multiple of the device count "
                                     f"{num_devices}")
    one_of(e.frechet_method, FRECHET_METHODS, "eval.frechet_method")
    if e.class_balanced:
        for key in ("fid_samples",) + (("fid_every_samples",) if e.fid_every else ()):
            if e[key] % c.data.num_classes:
                raise config_lib.ConfigError(f"eval.class_balanced=True needs eval.{key}={e[key]} to be a multiple of "
                                             f"data.num_classes={c.data.num_classes}")
    if e.fid_every < 0:
        raise config_lib.ConfigError(f"eval.fid_every={e.fid_every} must be >= 0 (0 = off)")


def _validate_family(c: ml_collections.ConfigDict, name: str, t) -> None:
    """HASTE's attention targets and REG's entangled token (targets.<name>.kind / entangle)."""
    from reed_jax.models import encoders

    key = f"targets.{name}"
    if t.kind == "attention":
        n = token_count(c)
        if t.pooled or not 1 <= t.heads <= c.model.heads or t.dim != n:
            raise config_lib.ConfigError(f"{key}: kind='attention' needs pooled=False, 1 <= heads <= model.heads="
                                         f"{c.model.heads} and dim = the {n} tokens of a map row; got pooled={t.pooled}, "
                                         f"heads={t.heads}, dim={t.dim}")
        if t.encoder == encoders.AFFINITY:
            src = c.targets.get(t.affinity_of)
            if src is None or src.pooled or src.kind != "features":
                raise config_lib.ConfigError(f"{key}.affinity_of={t.affinity_of!r} must name a token feature target "
                                             f"(one of {[k for k, v in c.targets.items() if not v.pooled]})")
        elif t.encoder not in encoders.image_encoders() or not t.encoder.startswith("dinov2"):
            raise config_lib.ConfigError(f"{key}.encoder={t.encoder!r}: an attention teacher is a DINOv2 encoder (its "
                                         f"block encoder_layer's attention) or 'affinity'")
        elif t.encoder_layer < 1:
            raise config_lib.ConfigError(f"{key}.encoder_layer={t.encoder_layer} must name a DINOv2 block (1-based)")
        elif c.encoder.mode == "precomputed" and not c.precompute.store_attention:
            per = t.heads * n * n * (2 if t.dtype == "bfloat16" else 4)
            raise config_lib.ConfigError(
                f"{key}: storing DINOv2 attention maps costs {per / 2**20:.2f} MiB per image ({t.heads} heads x {n} x {n}"
                f" {t.dtype}; {per * 1_281_167 / 1e12:.1f} TB for ImageNet's 1,281,167 images): use encoder.mode="
                f"'online' (computed in the step), or set precompute.store_attention=True to store them anyway")
    elif t.encoder == encoders.AFFINITY:
        raise config_lib.ConfigError(f"{key}: encoder='affinity' gives an attention teacher; set kind='attention'")
    if t.entangle:
        if not t.pooled or t.kind != "features":
            raise config_lib.ConfigError(f"{key}.entangle={t.entangle}: REG's class token is a pooled feature target "
                                         f"(pooled=True, kind='features')")


def token_count(c: ml_collections.ConfigDict) -> int:
    return (c.data.image_shape[0] // c.model.patch_size) ** 2


def target_shapes(c: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """Shard shape each stored target must have: [T, dim] (tokens), [dim] (pooled) or, attention
    targets, [heads, T, T]; affinity teachers are computed in the step from another target and not stored."""
    from reed_jax.models import encoders

    def shape(t):
        if t.kind == "attention":
            return (t.heads, token_count(c), token_count(c))
        return (t.dim,) if t.pooled else (token_count(c), t.dim)
    return {n: shape(t) for n, t in c.targets.items() if t.encoder != encoders.AFFINITY}


def sit_model(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """`config.model` of a published size, e.g. sit_model('XL/2')."""
    size, patch = name.removeprefix("SiT-").split("/")
    if size not in SIT_SIZES:
        raise config_lib.ConfigError(f"model: unknown SiT size {size!r}; expected one of {list(SIT_SIZES)}")
    depth, hidden, heads = SIT_SIZES[size]
    m = config_lib.base_config().model
    m.update(dict(name=f"SiT-{size}/{patch}", depth=depth, hidden=hidden, heads=heads, patch_size=int(patch)))
    m.update(overrides)
    return m


def digits_config(variant: str = "reed") -> ml_collections.ConfigDict:
    """The embedded default: SiT on scikit-learn digits (8x8x1 pixels), trained in minutes on a CPU.

    reed: the digits encoder's 4x4 patch tokens (64-d) tapped after block 2 (coefficient 1.0)
    plus its pooled 128-d vector (the second "modality") on the token mean after block 3
    (coefficient 0.5); w_gen ramps in over the first 10% of training, w_align = 0.5 constant.
    repa: the token target only, constant weights. irepa: REPA's token target through iREPA's
    switches (a 3x3 convolutional projector on the 4x4 token grid, spatially normalised target
    tokens; Singh et al. 2025, "What matters for representation alignment"). haste: REPA + HASTE's
    attention alignment (Wang et al. 2025, "REPA works until it doesn't") of blocks 1 and 2, every
    head, to the cosine-affinity maps of the encoder's tokens (the digits CNN has no attention of its
    own), weight 0.5 split over the two blocks, every alignment term off after half of training
    (HASTE's hard stop; 250K of 2.5M steps at ImageNet). reg: REPA + REG (Wu et al. 2025,
    "Representation entanglement for generation"): the pooled 128-d vector as a noised extra input
    token, its velocity loss weighted 0.03, the token slot aligned to the clean vector. sit: no targets.

        python main.py --config=configs/demo.py:haste --workdir=/tmp/haste --mode=train
    """
    c = config_lib.base_config()
    c.model.update(name="SiT-demo/2", depth=4, hidden=128, heads=4, patch_size=2, projector_width=256)
    c.optim.update(lr=1e-3, ema_decay=0.995)
    c.train.update(batch_size=64, steps=1000, log_every=50, eval_every=500, checkpoint_every=500)
    c.sample.update(method="sde", num_steps=50, batch_size=500, grid_per_class=10)
    c.eval.num_samples = 1000
    if variant not in DIGITS_VARIANTS:
        raise config_lib.ConfigError(f"digits config: unknown variant {variant!r}; expected one of {DIGITS_VARIANTS}")
    if variant != "sit":
        c.targets.digits_tokens = targets.make(tap="block2", pooled=False, dim=64, coeff=1.0, encoder="digits")
    if variant == "irepa":
        c.targets.digits_tokens.update(projector="conv", spatial_norm=True)
    if variant == "haste":
        for block in (1, 2):  # HASTE's blocks up to the feature tap, the attention term split over them (0.5 / 2)
            c.targets[f"digits_attn{block}"] = targets.make(
                tap=f"block{block}", kind="attention", heads=c.model.heads, dim=16, coeff=0.5 / 2,
                encoder="affinity", affinity_of="digits_tokens")
        c.curriculum.align.stop_step = c.train.steps // 2
    if variant == "reg":
        # REPA's token loss averaged over the 16 patch tokens and the class-token slot (REG's 257 at ImageNet 256)
        c.targets.digits_tokens.coeff = 16 / 17
        c.targets.digits_pooled = targets.make(tap="block2", pooled=True, dim=128, coeff=1 / 17, encoder="digits",
                                               entangle=0.03)
    if variant == "reed":
        c.targets.digits_pooled = targets.make(tap="block3", pooled=True, dim=128, coeff=0.5, encoder="digits")
        c.curriculum.gen.warmup = c.train.steps // 10
    return c


# Evaluation guidance of each published ImageNet result, all SDE with 250 steps (PROTOCOLS.md):
# name -> (sample.cfg_scale, sample.guidance_lo, sample.guidance_hi).
GUIDANCE_PRESETS = {
    "reed": (1.275, 0.0, 1.0),  # REED's FID 1.80 (REED image/README.md: --cfg-scale=1.275, whole interval)
    "repa": (1.8, 0.0, 0.7),    # REPA's FID 1.42 (REPA README: --cfg-scale=1.8 --guidance-high=0.7)
    "none": (1.0, 0.0, 1.0),    # no guidance: the papers' CFG-free numbers (REED's FID 8.2 at 300K steps)
    "reg": (2.3, 0.0, 0.85),    # REG's FID 1.36 (REG eval.sh: --cfg-scale=2.3 --cls-cfg-scale=2.3 --guidance-high=0.85)
    "haste": (1.65, 0.0, 0.72),  # HASTE's README (scripts/test.sh): --cfg-scale=1.65 --guidance-high=0.72
}
RESOLUTIONS = (256, 512)
VARIANT_GUIDANCE = {"reed": "reed", "repa": "repa", "sit": "none", "reg": "reg", "haste": "haste"}  # published evals
IMAGENET_VARIANTS = tuple(VARIANT_GUIDANCE)
# shards of their own where a variant stores other fields than REED's (sit/repa read REED's)
SHARD_SUFFIX = {"reg": "_reg", "haste": "_crops"}

# Tap depths of the DINOv2 (token) and VLM (pooled) targets per SiT size. XL/L: 8 and 16 as
# published; B and S (12 blocks): DINOv2 at 4 as published for B, the VLM target at 8 (our choice: the
# published 16 does not exist in a 12-block model).
IMAGENET_TAPS = {"S": (4, 8), "B": (4, 8), "L": (8, 16), "XL": (8, 16)}


def imagenet_config(size: str, variant: str, root: str = "/data/reed", guidance: str = "",
                    resolution: int = 256, tokenizer: str = latents.DEFAULT) -> ml_collections.ConfigDict:
    """ImageNet 256 (SD-VAE latents 32x32x4) with the published hyperparameters (METHOD.md section 2),
    or ImageNet 512 (`resolution=512`: 64x64x4 latents, 1,024 tokens for /2; DINOv2 on 448x448 inputs,
    32x32 = 1,024 patch tokens; ADM's 512 reference batch), with REPA's 512 run: its README's command
    (`--resolution=512`, every other flag as at 256) and train.py's default 400K steps.

    sit: no targets. repa: DINOv2-B/14 patch tokens (256 x 768), coefficient 1.0, w_align 0.5.
    reed: + the VLM embedding (3584, pooled) with coefficient 0.5 and w_gen = min(step/50K, 1).
    reg (REG, Wu et al. 2025; Martinser/REG train.sh): repa + DINOv2's CLS token (768) as a noised
    input token, its velocity loss weighted 0.03; REPA's loss averaged over the 256 patch tokens and
    the class-token slot (coefficients 256/257 and 1/257; REG shares one projector over the 257, we
    give the slot its own), 4M steps; CFG 2.3 on [0, 0.85] for both the image and the class token.
    haste (HASTE, Wang et al. 2025; NUS-HPC-AI-Lab/HASTE run.sh): repa + attention alignment of the
    4 blocks up to the feature tap (XL: 5-8) to DINOv2-B's last 4 blocks (9-12), 12 heads head for
    head, cross-entropy weighted 0.5 over the 4 pairs (0.25 each at w_align 0.5), every alignment term
    off at step 250K; DINOv2 runs in the step (encoder.mode='online': storing its maps would take
    1.5 MiB per image); CFG 1.65 on [0, 0.72]; 2.5M steps (its CFG checkpoint).
    guidance: the evaluation's CFG, a GUIDANCE_PRESETS name; '' = the variant's published result
    (reed: CFG 1.275 on the whole interval; repa: 1.8 on [0, 0.7]; sit: none); 'none' = no CFG.

    Every path is a config value derived from `paths_root` (default `root`), laid out as
        <root>/imagenet/train/<synset>/*.JPEG          (or data.image_source='tfds' + data.tfds_dir)
        <root>/weights/sd-vae-ft-mse.safetensors        (encoder of the stored moments)
        <root>/weights/sd-vae-ft-ema.safetensors        (decoder at evaluation)
        <root>/weights/dinov2_vitb14.pth                (torch hub) or a transformers .safetensors
        <root>/embeddings/qwen2vl7b_l15/<synset>/<stem>.npy   (REED's VLM vectors, 3584-d)
        <root>/weights/pt_inception-2015-12-05-6726825d.pth, <root>/eval/VIRTUAL_imagenet256_labeled.npz
        <root>/shards/imagenet256                       (written by --mode=precompute of the reed config,
                                                        read by sit, repa and reed; reg and haste store
                                                        other fields: imagenet256_reg (+ DINOv2's CLS),
                                                        imagenet256_crops (crops for online DINOv2))
    (512: <root>/eval/VIRTUAL_imagenet512.npz and <root>/shards/imagenet512)
    so `--config.paths_root=/mnt/reed` moves them all, and any single one can be overridden.
    tokenizer: a reed_jax.image.latents name; its latent shape, scale and weight files (encoder and
    decoder both its own but for SD-VAE), and patch size 2 for f8 or 1 for f16 (256 tokens at 256).
    """
    if variant not in IMAGENET_VARIANTS:
        raise config_lib.ConfigError(f"imagenet config: unknown variant {variant!r}; expected one of {IMAGENET_VARIANTS}")
    guidance = guidance or VARIANT_GUIDANCE[variant]
    if guidance not in GUIDANCE_PRESETS:
        raise config_lib.ConfigError(f"imagenet config: unknown guidance preset {guidance!r}; expected one of "
                          f"{list(GUIDANCE_PRESETS)} (or '' for the variant's published one)")
    if resolution not in RESOLUTIONS:
        raise config_lib.ConfigError(f"imagenet config: resolution {resolution} is not one of {RESOLUTIONS}")
    cfg_scale, guidance_lo, guidance_hi = GUIDANCE_PRESETS[guidance]
    c = config_lib.base_config()
    r = c.paths_root = ml_collections.FieldReference(root)
    tok = latents.get(tokenizer, "imagenet config: tokenizer")
    c.data.update(source="imagenet", kind="latents", image_shape=tok.latent_shape(resolution), tokenizer=tokenizer,
                  latent_scale=tok.scale, num_classes=1000, num_shards=1024,
                  image_size=resolution, dir=r + f"/shards/imagenet{resolution}{SHARD_SUFFIX.get(variant, '')}",
                  imagenet_dir=r + "/imagenet/train",
                  tfds_dir=r + "/tfds")
    c.precompute.dinov2_size = 224 * (resolution // 256)  # REPA: 224 at 256, 448 at 512 (16 or 32 patches a side)
    c.precompute.vae_path = r + f"/weights/{tok.encoder_file}"
    c.eval.update(vae_decoder_path=r + f"/weights/{tok.decoder_file}",
                  inception_path=r + "/weights/pt_inception-2015-12-05-6726825d.pth",
                  reference=r + ("/eval/VIRTUAL_imagenet256_labeled.npz" if resolution == 256 else
                                 f"/eval/VIRTUAL_imagenet{resolution}.npz"))
    c.model = sit_model(f"{size}/{max(1, 16 // tok.factor)}")
    c.optim.update(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999)
    c.train.update(batch_size=256, steps={"reed": 1_000_000, "haste": 2_500_000}.get(variant, 4_000_000), log_every=100,
                   eval_every=50_000, checkpoint_every=10_000, keep_checkpoints=3)
    if resolution == 512:
        c.train.steps = 400_000  # REPA's 512 command runs train.py's default --max-train-steps
    c.sample.update(method="sde", num_steps=250, cfg_scale=cfg_scale, guidance_lo=guidance_lo,
                    guidance_hi=guidance_hi, batch_size=256, grid_classes=8, grid_per_class=8)
    dino_depth, vlm_depth = IMAGENET_TAPS[size]
    if variant != "sit":
        c.targets.dinov2 = targets.make(tap=f"block{dino_depth}", pooled=False, dim=768, coeff=1.0, encoder="dinov2_vitb14",
                                   weights=r + "/weights/dinov2_vitb14.pth", dtype="bfloat16")
        c.curriculum.align.coeff = 0.5
    n = token_count(c)
    if variant == "reg":
        c.targets.dinov2.coeff = n / (n + 1)
        c.targets.dinov2_cls = targets.make(tap=f"block{dino_depth}", pooled=True, dim=768, coeff=1 / (n + 1),
                                            entangle=0.03, encoder="dinov2_vitb14", weights=c.targets.dinov2.weights)
    if variant == "haste":
        for i in range(4):  # SiT blocks dino_depth-3 .. dino_depth <- DINOv2-B blocks 9 .. 12
            c.targets[f"dinov2_attn{dino_depth - 3 + i}"] = targets.make(
                tap=f"block{dino_depth - 3 + i}", kind="attention", heads=min(12, c.model.heads), dim=n, coeff=0.25,
                encoder="dinov2_vitb14", encoder_layer=9 + i, weights=c.targets.dinov2.weights)
        c.curriculum.align.stop_step = 250_000
        c.encoder.mode = "online"
    if variant == "reed":
        c.targets.vlm = targets.make(tap=f"block{vlm_depth}", pooled=True, dim=3584, coeff=0.5, encoder="external",
                                source=r + "/embeddings/qwen2vl7b_l15")
        c.curriculum.gen.warmup = 50_000
    return c
