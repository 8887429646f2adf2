"""FID, sFID, Inception Score and improved precision/recall as the ADM evaluator computes them.

Streaming: `Moments` (running float64 sums for mean/covariance) and `InceptionScore` (per-split
running sums) take features batch by batch, merge across processes (`merge`) and never hold the
images. Precision/recall needs every pool_3 vector of both sets (50K x 2048 float32 = 400 MB):
`ManifoldPR` works on them in 10,000-row blocks like the ADM evaluator.

ADM details followed here:
- statistics: mean and `np.cov(rowvar=False)` in float64; Frechet distance with `sqrtm`, 1e-6 * I
  added to both covariances when the product is near-singular, tiny imaginary parts dropped
  (`frechet.frechet_distance`);
- Inception Score: softmax of pool_3 @ W (no bias), splits of 5,000 consecutive samples, the mean
  over splits of exp(E_x KL(p(y|x) || p(y)));
- precision/recall: k = 3, squared Euclidean distances computed in float16 (float32 where float16
  overflows), a point is on a manifold if it lies within the k-NN radius of any of its points;
  precision = samples on the reference manifold, recall = reference points on the sample manifold.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.image import frechet


class Moments:
    """Running sum, sum of outer products and count of feature vectors, float64."""

    def __init__(self, dim: int):
        self.n, self.s1, self.s2 = 0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64)

    def update(self, features: np.ndarray) -> Moments:
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.s1.shape[0]:
            raise ValueError(f"features of shape {f.shape}; expected [N, {self.s1.shape[0]}]")
        self.n += f.shape[0]
        self.s1 += f.sum(0)
        self.s2 += f.T @ f
        return self

    def merge(self, other: Moments) -> Moments:
        self.n += other.n
        self.s1 += other.s1
        self.s2 += other.s2
        return self

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) equal to (mean, np.cov(rowvar=False)) of everything seen."""
        if self.n < 2:
            raise ValueError(f"statistics need at least 2 feature vectors, have {self.n}")
        mu = self.s1 / self.n
        sigma = (self.s2 - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, sigma

    def state(self) -> dict:
        return {"n": np.int64(self.n), "s1": self.s1, "s2": self.s2}

    @classmethod
    def from_state(cls, state: dict) -> Moments:
        m = cls(state["s1"].shape[0])
        m.n, m.s1, m.s2 = int(state["n"]), np.array(state["s1"]), np.array(state["s2"])
        return m


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class InceptionScore:
    """Running Inception Score over samples in order; split s holds samples [s*split, (s+1)*split)."""

    def __init__(self, num_classes: int = 1008, split_size: int = 5000):
        self.split, self.k = split_size, num_classes
        self.count: dict[int, int] = {}
        self.psum: dict[int, np.ndarray] = {}
        self.plogp: dict[int, float] = {}

    def update(self, logits: np.ndarray, start: int) -> InceptionScore:
        """logits [N, K] of samples start .. start + N - 1 (their global indices)."""
        p = softmax64(logits)
        idx = start + np.arange(len(p))
        for s in np.unique(idx // self.split):
            part = p[idx // self.split == s]
            self.count[s] = self.count.get(s, 0) + len(part)
            self.psum[s] = self.psum.get(s, np.zeros(self.k)) + part.sum(0)
            self.plogp[s] = self.plogp.get(s, 0.0) + float(np.sum(part * np.log(part)))
        return self

    def merge(self, other: InceptionScore) -> InceptionScore:
        for s in other.count:
            self.count[s] = self.count.get(s, 0) + other.count[s]
            self.psum[s] = self.psum.get(s, np.zeros(self.k)) + other.psum[s]
            self.plogp[s] = self.plogp.get(s, 0.0) + other.plogp[s]
        return self

    def score(self) -> float:
        scores = []
        for s in sorted(self.count):
            n = self.count[s]
            pbar = self.psum[s] / n
            kl = self.plogp[s] / n - float(np.sum(pbar * np.log(pbar)))
            scores.append(np.exp(kl))
        return float(np.mean(scores))


def inception_score_reference(logits: np.ndarray, split_size: int = 5000) -> float:
    """The ADM evaluator's formula on all samples at once (what the streaming version must equal)."""
    preds = softmax64(logits)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


@jax.jit
def _sq_dists16(u, v):
    """Squared Euclidean distances [len(u), len(v)] computed in float16, float32 where that overflows."""
    def block(a, b):
        nu, nv = jnp.sum(a * a, 1)[:, None], jnp.sum(b * b, 1)[None, :]
        return jnp.maximum(nu - 2 * (a @ b.T) + nv, 0)

    d16 = block(u.astype(jnp.float16), v.astype(jnp.float16))
    return jax.lax.cond(jnp.all(jnp.isfinite(d16)), lambda: d16.astype(jnp.float32),
                        lambda: block(u.astype(jnp.float32), v.astype(jnp.float32)))


class ManifoldPR:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with the ADM evaluator's settings."""

    def __init__(self, k: int = 3, block: int = 10_000):
        self.k, self.block = k, block

    def radii(self, features: np.ndarray) -> np.ndarray:
        """[N] squared distance of each point to its k-th nearest neighbour (itself excluded)."""
        f = jnp.asarray(features, jnp.float32)
        out = []
        for i in range(0, len(f), self.block):
            d = jnp.concatenate([_sq_dists16(f[i:i + self.block], f[j:j + self.block])
                                 for j in range(0, len(f), self.block)], axis=1)
            out.append(np.asarray(-jax.lax.top_k(-d, self.k + 1)[0][:, self.k]))
        return np.concatenate(out)

    def _within(self, points: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray) -> np.ndarray:
        """[len(points)] bool: inside the radius of some reference point."""
        p, r = jnp.asarray(points, jnp.float32), jnp.asarray(ref, jnp.float32)
        out = []
        for i in range(0, len(p), self.block):
            hit = jnp.zeros((min(self.block, len(p) - i),), bool)
            for j in range(0, len(r), self.block):
                d = _sq_dists16(p[i:i + self.block], r[j:j + self.block])
                hit = hit | jnp.any(d <= jnp.asarray(ref_radii[j:j + self.block])[None, :], axis=1)
            out.append(np.asarray(hit))
        return np.concatenate(out)

    def __call__(self, ref: np.ndarray, samples: np.ndarray) -> tuple[float, float]:
        """(precision, recall) of `samples` against `ref` (pool_3 features [N, 2048])."""
        r_ref, r_s = self.radii(ref), self.radii(samples)
        precision = float(self._within(samples, ref, r_ref).mean())
        recall = float(self._within(ref, samples, r_s).mean())
        return precision, recall


def fid_from_moments(a: Moments, b_mu: np.ndarray, b_sigma: np.ndarray, method: str = "sqrtm") -> float:
    mu, sigma = a.stats()
    return frechet.frechet_distance(mu, sigma, b_mu, b_sigma, method=method)
