"""The track interface: every registered track satisfies `tracks.Track`, a module that does not is
refused naming what is wrong, and the checkpoint signatures are those the code wrote before the
tracks moved behind the interface (issue 18), so checkpoints written then still restore."""
import types

import pytest
from conftest import load_config

from reed_jax import config as config_lib, tracks, train


@pytest.mark.parametrize("name", sorted(tracks.REGISTRY))
def test_every_registered_track_has_every_hook(name):
    module = tracks.get(name)
    assert isinstance(module, tracks.Track)
    assert module.NAME == name
    c = config_lib.base_config()
    assert set(module.SOURCES) and all(isinstance(s, str) for s in module.SOURCES)
    assert c.track == "image"  # the schema carries every track's keys
    assert {"protein", "molecule"} <= set(c.keys())


def test_a_module_without_a_hook_or_with_other_parameters_is_refused():
    good = tracks.get("protein")
    fake = types.ModuleType("fake_track")
    for n in tracks.HOOKS + ("NAME", "SOURCES"):
        setattr(fake, n, getattr(good, n))
    tracks.check(fake)
    del fake.losses
    with pytest.raises(TypeError, match=r"fake_track lacks \['losses'\]"):
        tracks.check(fake)
    fake.losses = lambda config, model, params, rng: None  # the batch argument missing
    with pytest.raises(TypeError, match=r"fake_track.losses\(.*\) does not match Track.losses"):
        tracks.check(fake)


def test_an_unknown_track_is_a_config_error():
    c = load_config("demo")
    c.track = "audio"
    with pytest.raises(config_lib.ConfigError, match=r"track='audio' is not one of \('image', 'protein', 'molecule'\)"):
        config_lib.validate(c)


def test_a_source_of_another_track_is_refused():
    c = load_config("protein_demo")
    c.data.source = "digits"
    with pytest.raises(config_lib.ConfigError, match=r"track='protein' with data.source='digits'.*\('proteins',\)"):
        config_lib.validate(c)


def test_the_old_target_key_depth_names_its_replacement():
    c = load_config("demo")
    c.targets.digits_tokens.depth = 2
    with pytest.raises(config_lib.ConfigError, match=r"targets.digits_tokens.depth.*targets.digits_tokens.tap="):
        config_lib.validate(c)


def test_pooled_is_checked_per_track():
    c = load_config("molecule_demo")
    c.targets.qm9_property.pooled = False
    with pytest.raises(config_lib.ConfigError, match="targets.qm9_property.pooled=False: molecule targets"):
        config_lib.validate(c)
    c = load_config("protein_demo")
    c.targets.pair.pooled = True
    with pytest.raises(config_lib.ConfigError, match="targets.pair.pooled=True: protein targets"):
        config_lib.validate(c)


# Written by the code before the move (commit 1d4906f, `train.signature`): a checkpoint's meta holds
# its signature and restoring compares it with this one, so these must never change for these models.
SIGNATURES = {
    "demo": {"model": [4, 128, 4, 2, 4.0, 256], "scan": False, "data_shape": [8, 8, 1], "num_classes": 10,
             "targets": {"digits_pooled": [3, True, 128], "digits_tokens": [2, False, 64]}},
    "protein_demo": {"track": "protein", "model": [32, 3, 3, 12, 256], "max_length": 176, "head": 22,
                     "update_edge": True, "learnable_node": True,
                     "targets": {"pair": ["decoder2_edges", 128, 256], "single": ["decoder2_nodes", 128, 768],
                                 "structure": ["encoder_nodes", 128, 1536]}},
    "molecule_demo": {"track": "molecule", "model": [64, 32, 6, 64, False], "max_atoms": 29, "elements": "qm9",
                      "targets": {"qm9_property": ["layer4", 128, 64]}, "inputs": ["t", "coords", "types", "bonds"]},
    "imagenet_sit_xl_2_reed": {"model": [28, 1152, 16, 2, 4.0, 2048], "scan": False, "data_shape": [32, 32, 4],
                               "num_classes": 1000,
                               "targets": {"dinov2": [8, False, 768], "vlm": [16, True, 3584]}},
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signatures_are_those_of_checkpoints_written_before_the_move(name):
    assert train.signature(load_config(name)) == SIGNATURES[name]


def test_align_stop_step_is_in_every_preset_and_checked():
    for name in ("demo", "protein_demo", "molecule_demo"):
        c = load_config(name)
        assert c.curriculum.align.stop_step == 0
        c.curriculum.align.stop_step = -5
        with pytest.raises(config_lib.ConfigError, match="curriculum.align.stop_step=-5 must be an integer >= 0"):
            config_lib.validate(c)
