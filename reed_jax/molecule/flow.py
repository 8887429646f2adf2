"""Flow matching for molecules: coordinates by a Gaussian path, atom types / charges / bonds by
uniform-noise categorical flows (SemlaFlow's recipe, METHOD.md section 4). t = 0 is noise, 1 data.

Coordinates (scaled by 1 / coord_scale: QM9 1.7233, GEOM-Drugs 2.4070, SemlaFlow's
`scriptutil.py`): x_t = t x_1 + (1 - t) x_0 + N(0, sigma^2) (the added noise is not centred, as
the reference), with x_0 a zero-centre-of-mass Gaussian over the real atoms paired with x_1 by
equivariant optimal transport (`ot_pair`: a permutation by linear assignment on squared
distances, then the Kabsch rotation); the model predicts x_1. Categorical: each atom (bond) keeps
its data class with probability t, else a uniformly drawn class; the model predicts the data
class. Bonds, as the reference's interpolant: every ordered atom pair, the diagonal included,
is corrupted independently (`corrupt_bonds(symmetric=False)`). Sampling integrates the same paths
on SemlaFlow's log time grid from 0 to 0.99 (Euler): x += dt (x1_hat - x) / (1 - t), and each
categorical variable takes a step of the discrete-flow-models CTMC with stochasticity `noise`
(`uniform_sample_step`; SemlaFlow's `cat_sampling_noise_level`, 1 in the reference).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R [3, 3] minimising |a R - b| for centred point sets a, b [n, 3] (proper: det +1)."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def ot_pair(x0: np.ndarray, x1: np.ndarray, n: int) -> np.ndarray:
    """Noise x0 [N, 3] re-ordered and rotated onto data x1 [N, 3] (first n rows real, both centred):
    the permutation minimising the total squared distance, then the Kabsch rotation."""
    from scipy.optimize import linear_sum_assignment

    out = np.zeros_like(x0)
    if n == 0:
        return out
    a, b = x0[:n], x1[:n]
    cost = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    _, cols = linear_sum_assignment(cost)
    a = a[cols]
    out[:n] = a @ kabsch(a, b)
    return out


def centred_noise(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """[B, N, 3] standard Gaussian on the real atoms (mask [B, N]), zero centre of mass, zeros elsewhere."""
    x = rng.standard_normal(mask.shape + (3,)) * mask[..., None]
    n = np.maximum(mask.sum(1, keepdims=True), 1.0)[..., None]
    return (x - x.sum(1, keepdims=True) / n) * mask[..., None]


def noise_for_batch(rng: np.random.Generator, coords: np.ndarray, mask: np.ndarray, scale: float,
                    ot: bool = True) -> np.ndarray:
    """Host-side prior draw for a batch: [B, N, 3] float32, OT-paired with coords / scale when `ot`."""
    x0 = centred_noise(rng, mask)
    if ot:
        x1 = coords / scale
        x0 = np.stack([ot_pair(x0[i], x1[i], int(mask[i].sum())) for i in range(len(x0))])
    return x0.astype(np.float32)


def transport_cost(x0: np.ndarray, x1: np.ndarray, mask: np.ndarray) -> float:
    """Mean over molecules of the summed squared distance between paired atoms."""
    return float((((x0 - x1) ** 2).sum(-1) * mask).sum(-1).mean())


def sample_time(rng: jax.Array, batch: int, a: float = 2.0, b: float = 1.0) -> jax.Array:
    """t ~ Beta(a, b) [B] (Beta(2, 1) puts more steps near the data)."""
    return jax.random.beta(rng, a, b, (batch,))


def corrupt_categorical(rng: jax.Array, x1: jax.Array, t: jax.Array, num_classes: int) -> jax.Array:
    """Keep each class of x1 [B, ...] with probability t [B], else a uniform draw."""
    k_keep, k_noise = jax.random.split(rng)
    t = t.reshape(t.shape + (1,) * (x1.ndim - 1))
    keep = jax.random.uniform(k_keep, x1.shape) < t
    return jnp.where(keep, x1, jax.random.randint(k_noise, x1.shape, 0, num_classes))


def symmetric(rng_fn, rng: jax.Array, shape) -> jax.Array:
    """A symmetric [B, N, N] draw: the upper triangle of rng_fn(rng, shape) mirrored, zero diagonal."""
    a = rng_fn(rng, shape)
    up = jnp.triu(a, 1)
    return up + jnp.swapaxes(up, -1, -2)


def corrupt_bonds(rng: jax.Array, b1: jax.Array, t: jax.Array, num_classes: int,
                  symmetric_noise: bool = False) -> jax.Array:
    """Bond classes [B, N, N] corrupted: each entry keeps its class with probability t [B], else a
    uniform draw. symmetric_noise=False (the reference): every ordered pair and the diagonal
    independently; True: one draw per unordered pair, mirrored, diagonal 0."""
    k_keep, k_noise = jax.random.split(rng)
    if not symmetric_noise:
        keep = jax.random.uniform(k_keep, b1.shape) < t[:, None, None]
        return jnp.where(keep, b1, jax.random.randint(k_noise, b1.shape, 0, num_classes))
    keep = symmetric(lambda k, s: jax.random.uniform(k, s), k_keep, b1.shape) < t[:, None, None]
    noise = symmetric(lambda k, s: jax.random.randint(k, s, 0, num_classes), k_noise, b1.shape)
    return jnp.where(keep, b1, noise)


def time_grid(steps: int, end: float = 0.99) -> np.ndarray:
    """[steps + 1] times from 0 to `end`, log-spaced in (1 - t): small steps near the data
    (SemlaFlow's 'log' ODE grid: 1 - geomspace(1, 1 - end))."""
    return 1.0 - np.geomspace(1.0, 1.0 - end, steps + 1)


def uniform_sample_step(rng: jax.Array, current: jax.Array, logits: jax.Array, t: jax.Array, dt: jax.Array,
                        noise: float, eps: float = 1e-5) -> jax.Array:
    """One categorical step of the uniform-noise discrete flow (Campbell et al. 2024, SemlaFlow's
    `Integrator._uniform_sample_step`). current [B, ...] int, logits [B, ..., C], t and dt [B].

    With p = softmax(logits), t clipped to [eps, 1 - eps] and eta = noise while t + dt < 1 (else 0),
    the probability of moving to class j != current c is
        min(dt (1 + 2 eta (C - 1) t) / (1 - t) p_j + dt eta p_c, 1),
    of staying max(1 - sum of those, 0); the new class is a draw from these (renormalised) weights.
    noise = 0 is the plain Euler jump: move with probability dt / (1 - t) to a draw from p."""
    c = logits.shape[-1]
    p = jax.nn.softmax(logits.astype(jnp.float32), -1)
    shape = (-1,) + (1,) * (p.ndim - 1)
    tt = jnp.clip(t, eps, 1.0 - eps).reshape(shape)
    dtt = dt.reshape(shape)
    eta = jnp.where(tt + dtt < 1.0, noise, 0.0)
    onehot = jax.nn.one_hot(current, c, dtype=p.dtype)
    p_cur = (p * onehot).sum(-1, keepdims=True)
    step = jnp.minimum(dtt * (1.0 + 2.0 * eta * (c - 1) * tt) / (1.0 - tt) * p + dtt * eta * p_cur, 1.0)
    step = step * (1.0 - onehot)
    step = step + onehot * jnp.maximum(1.0 - step.sum(-1, keepdims=True), 0.0)
    return jax.random.categorical(rng, jnp.log(step))
