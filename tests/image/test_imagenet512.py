"""ImageNet 512 (issue 21.4): the configs differ from the 256 ones exactly where REPA's 512 run does
(64x64x4 latents, 512 crops, DINOv2 on 448 inputs, 400K steps, ADM's 512 reference, its own shards),
the DINOv2 target has one patch token per SiT token (32x32 = 1,024), and SiT-XL/2 + REED traces at
1,024 tokens."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, trace_reed_step
from fixture_weights import write_tiny_image_weights

from reed_jax import config as config_lib, train
from reed_jax.image import config as image_config
from reed_jax.models import encoders


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("variant", ["repa", "reed"])
def test_512_configs_differ_from_256_only_where_repa_512_does(variant):
    c512, c256 = load_config(f"imagenet512_sit_xl_2_{variant}"), load_config(f"imagenet_sit_xl_2_{variant}")
    config_lib.validate(c512, num_devices=8)
    a, b = _flat(c512.to_dict()), _flat(c256.to_dict())
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"data.image_shape", "data.image_size", "data.dir", "precompute.dinov2_size", "train.steps",
                       "eval.reference"}
    assert (tuple(c512.data.image_shape), c512.data.image_size, c512.precompute.dinov2_size) == ((64, 64, 4), 512, 448)
    assert c512.train.steps == 400_000 and c512.data.dir.endswith("/shards/imagenet512")
    assert c512.eval.reference.endswith("/eval/VIRTUAL_imagenet512.npz")
    shapes = image_config.target_shapes(c512)
    assert shapes["dinov2"] == (1024, 768) and (variant == "repa" or shapes["vlm"] == (3584,))
    with pytest.raises(config_lib.ConfigError, match="resolution 384 is not one of"):
        image_config.imagenet_config("XL", variant, resolution=384)


def test_dinov2_on_512_crops_gives_one_patch_token_per_sit_token(tmp_path):
    _, dino = write_tiny_image_weights(tmp_path)
    c = load_config("imagenet512_sit_xl_2_repa")
    c.targets.dinov2.update(dim=16, encoder="dinov2", weights=dino)
    c.precompute.dinov2_heads = 2  # the tiny fixture's width is no released size
    enc = encoders.build("dinov2", c.targets.dinov2, c)
    out = jax.eval_shape(enc.apply, enc.params, jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.uint8))
    assert out.shape == (2, 1024, 16) == (2, image_config.token_count(c), 16)


def test_sit_xl_reed_at_512_traces():
    c = load_config("imagenet512_sit_xl_2_reed")
    model, tx = train.build_model(c), train.make_optimizer(c)
    state = train.abstract_state(c, model, tx)
    metrics = trace_reed_step(c, model, tx, state, latent=64, tokens=1024)
    assert metrics["loss/total"].shape == ()
    n = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))
    assert 675e6 < n < 720e6  # the same parameters as at 256 (sin-cos positions, not learned)
