"""The embedded default data: scikit-learn's digits (1,797 real 8x8 images, 10 classes, offline)."""
from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def load() -> tuple[np.ndarray, np.ndarray]:
    """-> (images [1797, 8, 8, 1] float32 in [-1, 1], labels [1797] int32)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[..., None]
    return images, d.target.astype(np.int32)
