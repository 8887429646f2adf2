"""The image track's hooks for the shared trainer (reed_jax/tracks.py): SiT on pixels or VAE
latents with a linear/cosine interpolant and a velocity loss; targets from frozen image encoders,
precomputed into the shards or run inside the step (`encoder.mode='online'`)."""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from reed_jax import objective, targets
from reed_jax.data import pipeline, records
from reed_jax.image import interpolants, sit as sit_lib
from reed_jax.image.config import SOURCES, extend_schema, target_shapes, validate  # noqa: F401 (hooks)
from reed_jax.image.evaluate import evaluate, evaluations, preflight, sample  # noqa: F401 (hooks)

NAME = "image"

# ----------------------------------------------------------------------------- model


def build_model(config) -> sit_lib.SiT:
    """SiT of `config.model` on `data.image_shape`, with a projector per target."""
    return sit_lib.build_sit(config.model, tuple(config.data.image_shape), config.data.num_classes,
                             targets.from_config(config))


def init_params(config, model, rng: jax.Array):
    """Params from `rng` alone (the init's label-dropout draw does not touch them)."""
    x = jnp.zeros((1,) + tuple(config.data.image_shape))
    return flax.linen.unbox(model.init({"params": rng, "label_dropout": jax.random.fold_in(rng, 1)}, x, jnp.zeros((1,)),
                                       jnp.zeros((1,), jnp.int32), train=True,
                                       **sit_lib.class_token_input(model, 1))["params"])


def logical_specs(model):
    return sit_lib.logical_specs(model)


def signature(config) -> dict:
    m = config.model
    return {"model": [m.depth, m.hidden, m.heads, m.patch_size, m.mlp_ratio, m.projector_width],
            "scan": bool(m.scan),  # the param layout: per-block or stacked runs
            "data_shape": list(config.data.image_shape), "num_classes": config.data.num_classes,
            # (the projector, kind and REG's input token only when not the defaults: older checkpoints keep theirs;
            # REG's loss weight changes no parameter, so it is not part of the signature)
            "targets": {t.name: [sit_lib.tap_depth(t), t.pooled, t.dim] + ([t.projector] if t.projector != "mlp" else [])
                        + ([t.kind, t.heads] if t.kind != "features" else []) + (["entangled"] if t.entangle else [])
                        for t in targets.from_config(config)}}


def losses(config, model, params, batch, rng):
    """Per-sample velocity MSE [B], alignment losses {name: [B]} and t [B] (1 = pure noise).

    REG (a target with entangle > 0): its clean vector is noised with the same t and its own noise,
    fed to the model as the class token, and `entangle x` its velocity MSE is the generative loss's
    second part: {'gen': image MSE [B], 'cls': entangle x class-token MSE [B]}, summed by
    objective.combine (REG: loss = MSE + 0.03 MSE_cls) and logged apart (loss/gen, loss/cls).
    HASTE (kind='attention'): the cross-entropy of the tap block's attention rows against the
    teacher's maps (stored, computed online, or encoder='affinity': from the `affinity_of` target's
    tokens)."""
    k_x0, k_t, k_eps, k_drop = jax.random.split(rng, 4)
    d, path = config.data, config.diffusion.path
    x0 = batch["image"] if d.kind == "pixels" else interpolants.x0_from_moments(k_x0, batch["moments"], d.latent_scale)
    t = interpolants.sample_time(config.diffusion.time_sampler, k_t, x0.shape[0], path)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    xt, v = interpolants.interpolate(path, x0, eps, t)
    reg = sit_lib.entangled(model.targets)
    extra = {}
    if reg is not None:
        c0 = batch[records.TARGET_PREFIX + reg.name].astype(jnp.float32)
        c_t, v_cls = interpolants.interpolate(path, c0, jax.random.normal(jax.random.fold_in(rng, 5), c0.shape), t)
        extra["cls"] = c_t
    pred, feats = model.apply({"params": params}, xt, t, batch["label"], train=True, rngs={"label_dropout": k_drop},
                              **extra)
    gen = objective.mse_per_sample(pred[0] if reg is not None else pred, v)
    if reg is not None:  # loss/gen stays the image's MSE (comparable with other variants); loss/cls the class token's
        gen = {"gen": gen, "cls": reg.entangle * objective.mse_per_sample(pred[1], v_cls)}
    align = {}
    for n in feats:
        spec = config.targets[n]
        if spec.kind == "attention":
            teacher = (objective.affinity(batch[records.TARGET_PREFIX + spec.affinity_of]) if spec.affinity_of
                       else batch[records.TARGET_PREFIX + n])
            align[n] = objective.attention_loss(feats[n], teacher)
            continue
        target = batch[records.TARGET_PREFIX + n]
        if spec.get("spatial_norm", False):  # iREPA
            target = objective.spatial_normalize(target)
        align[n] = objective.alignment_loss(feats[n], target)
    return gen, align, t

# ----------------------------------------------------------------------------- data


def precompute(config, out_dir: str, log=print) -> str:
    """Digits: fit the digits encoders, write the shards. ImageNet: VAE moments (or crops) and every
    target's features (reed_jax.image.precompute)."""
    if config.data.source == "imagenet":
        from reed_jax.image import precompute as imagenet_precompute
        return imagenet_precompute.precompute_images(config, out_dir, log)
    from reed_jax.image import digits
    return digits.precompute(config, out_dir, log)


def check_data(config, schema, data_dir: str) -> None:
    """The shards hold the configured targets with their widths, and the model's input field."""
    from reed_jax.image import precompute as imagenet_precompute

    shapes = target_shapes(config)
    if config.encoder.mode == "online":
        for name in imagenet_precompute.image_targets(config):
            shapes.pop(name)
        s = config.data.image_size
        if "pixels" not in schema.names or tuple(schema.field("pixels").shape) != (s, s, 3):
            raise records.DataError(f"encoder.mode='online' needs crops (field 'pixels' [{s}, {s}, 3]) in the shards "
                                    f"in {data_dir!r}; they hold {schema.names}: precompute with encoder.mode='online'")
    records.check_targets(schema, shapes, data_dir)
    x_field = "image" if config.data.kind == "pixels" else "moments"
    want = tuple(config.data.image_shape)
    if x_field == "moments":
        want = want[:-1] + (2 * want[-1],)
    have = schema.field(x_field).shape
    if tuple(have) != want:
        raise records.DataError(f"data.image_shape={tuple(config.data.image_shape)} expects field {x_field!r} of "
                                f"shape {want}, shards in {data_dir!r} hold {tuple(have)}")


def train_iterator(config, data_dir: str, batch_size: int, shard_index: int, shard_count: int, log=print):
    """Global batches in a process-count-independent order (pipeline.GlobalBatches); this process's slice."""
    return pipeline.GlobalBatches(pipeline.open_split(data_dir, "train"), batch_size * shard_count, seed=config.seed,
                                  shard_index=shard_index, shard_count=shard_count)


def frozen_encoders(config) -> dict:
    """Frozen encoders run inside the step (`encoder.mode='online'`), else {}: {target name (or names
    joined with '+' for targets sharing one encoder's forward): FrozenEncoder}; every target's output
    shape is checked against the config before any compute."""
    from reed_jax.image import precompute as imagenet_precompute
    from reed_jax.models import encoders

    if config.encoder.mode != "online":
        return {}
    shapes = target_shapes(config)
    out = encoders.build_online(imagenet_precompute.image_targets(config), config)
    s = config.data.image_size
    for enc in out.values():
        have = jax.eval_shape(enc.apply, enc.params, jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8))
        for name, a in have.items():
            if tuple(a.shape[1:]) != tuple(shapes[name]):
                t = config.targets[name]
                raise records.DataError(f"targets.{name}: encoder {t.encoder} gives features of shape "
                                        f"{tuple(a.shape[1:])} on {s}x{s} crops; the config expects {tuple(shapes[name])}")
    return out
