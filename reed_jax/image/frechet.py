"""Frechet distance between Gaussians fitted to features, float64, with the ADM/pytorch-fid safeguards."""
from __future__ import annotations

import numpy as np
from scipy import linalg


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mu [D], sigma [D, D]) in float64 (np.cov, rowvar=False)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"statistics need features of shape [N >= 2, D], got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


METHODS = ("sqrtm", "eigh")


def trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2 as sum sqrt(eig(A S2 A)), A = S1^(1/2): two symmetric
    eigendecompositions instead of a complex Schur form (5-8x faster at D=2048 on a CPU; the same
    value to ~1e-13 relative on full-rank covariances, ~1e-7 on rank-deficient ones)."""
    w, u = linalg.eigh(s1)
    a = (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T
    m = a @ s2 @ a
    return float(np.sqrt(np.clip(linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)).

    method 'sqrtm' is the published protocol (pytorch-fid / ADM: scipy sqrtm of the product, retried
    with eps*I added when not finite, real part); 'eigh' the same quantity through symmetric
    eigendecompositions (`trace_sqrt_product_eigh`), for quick in-training monitoring and tests.
    """
    if method not in METHODS:
        raise ValueError(f"frechet method {method!r} is not one of {METHODS}")
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product_eigh(s1, s2))
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm of the covariance product")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
