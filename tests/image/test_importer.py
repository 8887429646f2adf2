"""--mode=import: a REED-style PyTorch training checkpoint (written by torch) -> orbax -> the model
reproduces the numpy transcription of the reference forward."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from test_convert import HW, NCLS, B, C, D, P, ref_forward

from reed_jax import checkpoint, train
from reed_jax.convert import torch_file
from reed_jax.image import importer
from reed_jax.image.sit import sincos_2d

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "sit_tiny_checkpoint.pt")


def tiny_sit_config(with_targets=True):
    c = tiny_config("reed")
    c.data.update(image_shape=(HW, HW, C), num_classes=NCLS)
    c.model.update(depth=2, hidden=16, heads=2, patch_size=2, projector_width=12)
    c.targets.digits_tokens.update(tap="block2", dim=8)
    c.targets.digits_pooled.update(tap="block1", dim=6)
    if not with_targets:
        c.targets = type(c.targets)()
    return c


@pytest.mark.parametrize("scan", [False, True])
def test_imported_ema_reproduces_reference_forward(tmp_path, scan):
    c = tiny_sit_config()
    c.model.scan = scan
    importer.import_checkpoint(c, str(tmp_path), CKPT, step=1234, log=lambda *_: None)
    model, tx = train.build_model(c), train.make_optimizer(c)
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.check_signature(mngr, train.signature(c), str(tmp_path))
    state, meta = checkpoint.restore(mngr, train.abstract_state(c, model, tx))
    assert int(state.step) == 1234 and meta["torch_key"] == "ema"
    sd = dict(torch_file.load_state_dict(CKPT, "ema"), pos_embed=sincos_2d(D, HW // P)[None])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, C, HW, HW)).astype(np.float32)
    t, y = np.array([0.3, 0.8], np.float32), np.array([1, NCLS])
    out, feats = model.apply({"params": state.ema_params}, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t),
                             jnp.asarray(y))
    ref_out, ref_z = ref_forward(sd, x.astype(np.float64), t.astype(np.float64), y, depth_tap=2)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref_out, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(feats["digits_tokens"], ref_z, atol=1e-4, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(checkpoint.CheckpointMismatch, match="already holds checkpoints"):
        importer.import_checkpoint(c, str(tmp_path), CKPT)


def test_model_key_projector_drop_and_shape_errors(tmp_path):
    c = tiny_sit_config(with_targets=False)  # sampling/evaluation: projectors dropped
    importer.import_checkpoint(c, str(tmp_path / "a"), CKPT, key="model", log=lambda *_: None)
    model, tx = train.build_model(c), train.make_optimizer(c)
    state, meta = checkpoint.restore(checkpoint.manager(str(tmp_path / "a")), train.abstract_state(c, model, tx))
    assert meta["torch_key"] == "model" and not any(k.startswith("projectors") for k in state.params)
    np.testing.assert_allclose(state.params["blocks_0"]["mlp"]["fc1"]["kernel"],
                               torch_file.load_state_dict(CKPT, "model")["blocks.0.mlp.fc1.weight"].T)
    wide = tiny_sit_config()
    wide.model.update(hidden=32, heads=2)
    with pytest.raises(importer.ImportError_, match=r"checkpoint shape \(96,\) != config shape \(192,\)"):
        importer.import_checkpoint(wide, str(tmp_path / "b"), CKPT, log=lambda *_: None)
    assert not os.path.exists(tmp_path / "b" / "checkpoints" / "0")  # nothing written on a mismatch
