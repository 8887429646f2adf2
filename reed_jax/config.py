"""The shared config schema and its validation; each track adds and checks its own keys.

`base_config()` is the schema: every key a run may set, with its default: the shared keys below
plus each registered track's (`Track.schema`: the image track's data/model/sample/eval keys, the
protein and molecule blocks). Config files start from a track's preset (reed_jax/<track>/config.py)
and override values; `validate(config)` runs once at start-up, before any compute, and raises
`ConfigError` naming the offending key: the shared keys here, then the track's
(`Track.validate`). Targets are a dict keyed by target name, each shaped like
`targets.template()`; a target's name is also its shard field (`target/<name>`).
"""
from __future__ import annotations

import math

import ml_collections

from reed_jax import targets as targets_lib
from reed_jax.curriculum import DECAYS
from reed_jax.objective import NOISE_WEIGHTS


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key."""


def target_template() -> ml_collections.ConfigDict:
    """The keys of one target (reed_jax.targets.template)."""
    return targets_lib.template()


def base_config() -> ml_collections.ConfigDict:
    """Every key a run may set, with its default (the shared ones here, each track's from its schema)."""
    from reed_jax import tracks

    c = ml_collections.ConfigDict()
    c.track = "image"  # one of tracks.REGISTRY: which backbone, objective and evaluation the trainer runs
    c.seed = 0
    c.paths_root = ""  # the ImageNet configs derive every path from it: --config.paths_root=/mnt/reed moves them all
    c.data = dict(
        source="digits",       # one of the track's SOURCES (image: digits, imagenet; protein: proteins; molecule: molecules)
        dir="",                # shard directory; '' = <workdir>/data
        num_shards=4,
        verify_checksums="auto",  # sha256 of every train shard against the manifest at start: 'on', 'off', or
                               # 'auto' = when the shards total <= 2 GiB (records.AUTO_CHECKSUM_BYTES; sizes always)
    )
    c.model = dict(name="custom", hidden=128,
                   projector_width=2048)  # projector hidden width of targets with proj_width=0
    c.targets = ml_collections.ConfigDict()
    c.mesh = dict(data=-1, fsdp=1)  # device mesh; fsdp > 1 shards params/EMA/optimizer state
    c.curriculum = dict(
        gen=dict(start=0, warmup=0, decay="constant", total_steps=0),
        align=dict(coeff=0.5, decay="constant", decay_steps=0,
                   stop_step=0))  # HASTE: every alignment term off from this step on (0 = never)
    c.optim = dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999,
                   amsgrad=False,   # AMSGrad's max of second moments (SemlaFlow's Adam) instead of AdamW
                   warmup_steps=0,  # linear learning-rate warm-up from 0 over this many steps
                   warmup_init=0.0)  # the warm-up's first learning rate, a fraction of lr (SemlaFlow: 1e-2)
    c.train = dict(batch_size=256, steps=1_000_000, log_every=100, eval_every=50_000,
                   checkpoint_every=10_000, keep_checkpoints=3, max_consecutive_skips=20,
                   allow_batch_size_change=False,  # resuming with another batch_size is refused unless True
                   cpu_reuse_memory=False)  # XLA:CPU: keep freed memory for the next step (hostmem.py; opt-in)
    c.sample = dict(batch_size=256)  # sampling batch (evaluation and --mode=sample)
    c.eval = dict()
    for name in tracks.REGISTRY:
        tracks.get(name).extend_schema(c)
    return c


def epochs_to_steps(epochs: float, num_train: int, batch_size: int) -> int:
    """A schedule length the reference counts in epochs, in optimizer steps (ceil(N / B) per epoch)."""
    return int(round(epochs * -(-num_train // batch_size)))


def check_keys(cfg, ref, prefix: str) -> None:
    for k in cfg.keys():
        key = f"{prefix}{k}"
        if k not in ref:
            hint = ""
            if prefix.startswith("targets.") and k == "depth":
                hint = f" (a target's tap point is now `tap`: {prefix}tap='block<N>' for the image track)"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if isinstance(ref[k], ml_collections.ConfigDict) and ref[k].keys():
            if not isinstance(cfg[k], ml_collections.ConfigDict):
                raise ConfigError(f"config key {key!r} must be a block with keys {sorted(ref[k].keys())}")
            check_keys(cfg[k], ref[k], key + ".")


def one_of(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {tuple(allowed)}")


def check_optim(o) -> None:
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
    """Raise ConfigError naming the first key that cannot run: the shared keys, then the track's."""
    from reed_jax import tracks
    from reed_jax.data.records import CHECKSUM_MODES
    from reed_jax.models import encoders

    one_of(c.get("track"), tuple(tracks.REGISTRY), "track")
    ref = base_config()
    check_keys({k: v for k, v in c.items() if k != "targets"}, ref, "")
    track = tracks.get(c.track)
    if c.data.source not in track.SOURCES:
        raise ConfigError(f"track={c.track!r} with data.source={c.data.source!r}: the {c.track} track reads "
                          f"data.source in {track.SOURCES}")
    one_of(c.data.verify_checksums, CHECKSUM_MODES, "data.verify_checksums")
    for name, t in c.targets.items():
        check_keys(t, target_template(), f"targets.{name}.")
        one_of(t.encoder, encoders.names(), f"targets.{name}.encoder")
        one_of(t.dtype, ("float32", "bfloat16"), f"targets.{name}.dtype")
        if (t.encoder == encoders.EXTERNAL) != bool(t.source):
            raise ConfigError(f"targets.{name}.source={t.source!r} with encoder={t.encoder!r}: imported embeddings "
                              f"need encoder='external' and a source; other encoders take no source")
        if t.coeff < 0:
            raise ConfigError(f"targets.{name}.coeff={t.coeff} must be >= 0")
        if t.dim <= 0:
            raise ConfigError(f"targets.{name}.dim={t.dim} must be positive")
        if t.proj_width < 0:
            raise ConfigError(f"targets.{name}.proj_width={t.proj_width} must be >= 0 (0 = model.projector_width)")
        one_of(t.noise_weight, NOISE_WEIGHTS, f"targets.{name}.noise_weight")
        one_of(t.projector, targets_lib.PROJECTORS, f"targets.{name}.projector")
        if t.pooled and (t.projector != "mlp" or t.spatial_norm):
            raise ConfigError(f"targets.{name}: projector={t.projector!r}, spatial_norm={t.spatial_norm} act on the token "
                              f"grid; a pooled target takes projector='mlp', spatial_norm=False")
        one_of(t.kind, targets_lib.KINDS, f"targets.{name}.kind")
        if t.entangle < 0:
            raise ConfigError(f"targets.{name}.entangle={t.entangle} must be >= 0 (0 = not an input token)")
        if c.track != "image" and (t.kind != "features" or t.entangle):
            raise ConfigError(f"targets.{name}: kind={t.kind!r}, entangle={t.entangle} (HASTE's attention alignment, "
                              f"REG's input token) need the image track's transformer; track={c.track!r}")
        if (t.encoder == encoders.AFFINITY) != bool(t.affinity_of):
            raise ConfigError(f"targets.{name}: encoder={t.encoder!r} with affinity_of={t.affinity_of!r}: a teacher map "
                              f"from another target's tokens needs encoder='affinity' and affinity_of, and only it")
    one_of(c.curriculum.gen.decay, DECAYS, "curriculum.gen.decay")
    one_of(c.curriculum.align.decay, DECAYS, "curriculum.align.decay")
    for key, bs in (("train.batch_size", c.train.batch_size), ("sample.batch_size", c.sample.batch_size)):
        if bs <= 0 or bs % num_devices:
            raise ConfigError(f"{key}={bs} must be a positive multiple of the device count {num_devices}")
    for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips"):
        if c.train[key] <= 0:
            raise ConfigError(f"train.{key}={c.train[key]} must be positive")
    check_optim(c.optim)
    g = c.curriculum.gen
    if g.decay != "constant" and g.total_steps <= g.start + g.warmup:
        raise ConfigError(f"curriculum.gen.total_steps={g.total_steps} must exceed start + warmup for decay {g.decay!r}")
    a = c.curriculum.align
    if not (isinstance(a.stop_step, int) and a.stop_step >= 0):
        raise ConfigError(f"curriculum.align.stop_step={a.stop_step!r} must be an integer >= 0 (0 = never)")
    if a.decay != "constant" and a.decay_steps <= 0:
        raise ConfigError(f"curriculum.align.decay_steps={a.decay_steps} must be positive for decay {a.decay!r}")
    track.validate(c, num_devices)
