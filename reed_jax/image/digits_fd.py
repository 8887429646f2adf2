"""digits-FD and sample accuracy: the embedded default's sample-quality metrics.

A `DigitsFDNet` (different architecture and seed from the REED target encoder) gives features
for a Frechet distance between generated and real digits, and its classifier gives the accuracy
of class-conditional samples (predicted class == conditioning label).
"""
from __future__ import annotations

import numpy as np

from reed_jax.image import frechet
from reed_jax.models.encoders import classifier
from reed_jax.models.encoders.digits import DigitsFDNet


class DigitsScorer:
    def __init__(self, params, real_images: np.ndarray):
        """params: trained DigitsFDNet params; real_images [N, 8, 8, 1] in [-1, 1] (the reference set)."""
        self.net, self.params = DigitsFDNet(), params
        self.real_stats = frechet.statistics(classifier.predict(self.net, params, real_images)["features"])

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """images [N, 8, 8, 1] (clipped to [-1, 1] here), labels [N] -> {'digits_fd', 'accuracy'}."""
        out = classifier.predict(self.net, self.params, np.clip(images, -1.0, 1.0))
        fd = frechet.frechet_distance(*frechet.statistics(out["features"]), *self.real_stats)
        return {"digits_fd": fd, "accuracy": float((out["logits"].argmax(-1) == labels).mean())}
