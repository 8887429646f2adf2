"""Sample quantisation for evaluation: truncation as REPA/REED `generate.py` and ADM (issue 16.1)."""
import numpy as np

from reed_jax.image import fid_eval, grids as visualize


def test_samples_are_truncated_not_rounded():
    # grey levels 255 (x + 1) / 2 chosen with margins from the integers: floor, not round
    levels = np.array([-300.0, 0.0, 0.25, 0.75, 1.5, 127.5, 127.75, 200.9, 254.6, 255.0, 400.0])
    x = (2.0 * levels / 255.0 - 1.0).astype(np.float32)
    want = np.array([0, 0, 0, 0, 1, 127, 127, 200, 254, 255, 255], np.uint8)
    np.testing.assert_array_equal(visualize.to_uint8(x), want)
    # on average a pixel sits half a grey level below its continuous value (rounding: no shift)
    u = np.random.default_rng(0).uniform(-1, 1, 200_000).astype(np.float32)
    shift = visualize.to_uint8(u).astype(np.float64).mean() - (255.0 * (u.astype(np.float64) + 1) / 2).mean()
    np.testing.assert_allclose(shift, -0.5, atol=0.01)


def test_fid_images_use_the_same_quantisation_and_repeat_grey_to_rgb():
    x = (2.0 * np.array([0.75, 100.6, 254.9]) / 255.0 - 1.0).astype(np.float32).reshape(1, 1, 3, 1)
    out = fid_eval.to_rgb_uint8(x)
    assert out.shape == (1, 1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [[0] * 3, [100] * 3, [254] * 3])
