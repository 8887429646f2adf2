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
                                       jnp.zeros((1,), jnp.int32), train=True)["params"])


def logical_specs(model):
    return sit_lib.logical_specs(model)


def signature(config) -> dict:
    m = config.model
    return {"model": [m.depth, m.hidden, m.heads, m.patch_size, m.mlp_ratio, m.projector_width],
            "scan": bool(m.scan),  # the param layout: per-block or stacked runs
            "data_shape": list(config.data.image_shape), "num_classes": config.data.num_classes,
            "targets": {t.name: [sit_lib.tap_depth(t), t.pooled, t.dim] + ([t.projector] if t.projector != "mlp" else [])
                        for t in targets.from_config(config)}}  # (the projector only when not the MLP: older checkpoints)


def losses(config, model, params, batch, rng):
    """Per-sample velocity MSE [B], alignment losses {name: [B]} and t [B] (1 = pure noise)."""
    k_x0, k_t, k_eps, k_drop = jax.random.split(rng, 4)
    d = config.data
    x0 = batch["image"] if d.kind == "pixels" else interpolants.x0_from_moments(k_x0, batch["moments"], d.latent_scale)
    t = interpolants.sample_time(config.diffusion.time_sampler, k_t, x0.shape[0], config.diffusion.path)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    xt, v = interpolants.interpolate(config.diffusion.path, x0, eps, t)
    pred, feats = model.apply({"params": params}, xt, t, batch["label"], train=True, rngs={"label_dropout": k_drop})
    align = {}
    for n in feats:
        target = batch[records.TARGET_PREFIX + n]
        if config.targets[n].get("spatial_norm", False):  # iREPA
            target = objective.spatial_normalize(target)
        align[n] = objective.alignment_loss(feats[n], target)
    return objective.mse_per_sample(pred, v), align, t

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
    """{target name: FrozenEncoder} run inside the step (`encoder.mode='online'`), else {}; each one's
    output shape is checked against its target before any compute."""
    from reed_jax.image import precompute as imagenet_precompute
    from reed_jax.models import encoders

    if config.encoder.mode != "online":
        return {}
    shapes = target_shapes(config)
    out = {}
    for name, t in imagenet_precompute.image_targets(config).items():
        enc = encoders.build(name, t, config)
        s = config.data.image_size
        have = jax.eval_shape(enc.apply, enc.params, jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8)).shape[1:]
        if tuple(have) != tuple(shapes[name]):
            raise records.DataError(f"targets.{name}: encoder {t.encoder} gives features of shape {tuple(have)} on "
                                    f"{s}x{s} crops; the config expects {tuple(shapes[name])}")
        out[name] = enc
    return out
