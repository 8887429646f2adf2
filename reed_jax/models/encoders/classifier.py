"""Fit a small frozen network as a classifier (the digits target encoder and the FD network).

Pure optax loop on in-memory arrays: images [N, H, W, C] float32, labels [N] int.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit(module: nn.Module, images: np.ndarray, labels: np.ndarray, *, seed: int, steps: int,
        batch_size: int = 128, lr: float = 2e-3, noise: float = 0.1) -> tuple[dict, float]:
    """Train `module` (returning a dict with 'logits') with cross-entropy; returns (params, train accuracy).

    Light Gaussian input noise (std `noise`) keeps the features smooth off the data manifold,
    which generated samples visit.
    """
    rng = jax.random.PRNGKey(seed)
    params = module.init(rng, jnp.asarray(images[:1]))["params"]
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)
    x_all, y_all = jnp.asarray(images), jnp.asarray(labels)

    @jax.jit
    def step(params, opt, key):
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (batch_size,), 0, x_all.shape[0])
        x = x_all[idx] + noise * jax.random.normal(k2, x_all[idx].shape)

        def loss_fn(p):
            logits = module.apply({"params": p}, x)["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    keys = jax.random.split(jax.random.fold_in(rng, 1), steps)
    for i in range(steps):
        params, opt, _ = step(params, opt, keys[i])
    acc = accuracy(module, params, images, labels)
    return params, acc


def predict(module: nn.Module, params, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Batched forward -> {output name: stacked numpy array}."""
    fn = jax.jit(lambda x: module.apply({"params": params}, x))
    outs = [jax.device_get(fn(jnp.asarray(images[i:i + batch_size]))) for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def accuracy(module: nn.Module, params, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(module, params, images)["logits"].argmax(-1) == labels).mean())
