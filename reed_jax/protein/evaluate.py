"""Protein metrics on held-out backbones: perplexity, masked accuracy, recovery, diversity.

- perplexity: exp of the mean (unsmoothed) cross-entropy over masked residues, with masks drawn as
  in training (t ~ U[t_min, t_max], fixed seed), so runs and checkpoints compare;
- masked accuracy: argmax accuracy on those masked residues;
- recovery: fraction of residues where a fully sampled sequence (the masked-diffusion sampler,
  `protein.sample_steps` at `protein.temperature`) equals the native, averaged over chains and
  `protein.eval_samples` samples each;
- diversity: mean pairwise Hamming distance / length between the samples of the same backbone.
A folding model (ESMFold or similar) for self-consistency RMSD and pLDDT plugs in through
`fold_fn(sequences, backbones) -> {'sc_rmsd': [...], 'plddt': [...]}` when local weights exist.
"""
from __future__ import annotations

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.protein import masked_diffusion, model as pmodel, residues


def make_evaluator(config, model, batches: list[dict], fold_fn: Callable | None = None):
    """batches: held-out padded batches {coords, mask, residue_idx, tokens}. Returns
    evaluate(params, step) -> ({metrics}, None)."""
    p = config.protein

    @jax.jit
    def masked_stats(params, batch, rng):
        noisy, _, hidden = masked_diffusion.corrupt(rng, batch["tokens"], batch["mask"], p.t_min, p.t_max)
        logits = pmodel.logits_fn(model, params, batch)(noisy)
        ce = masked_diffusion.smoothed_cross_entropy(logits, batch["tokens"], 0.0)
        correct = jnp.argmax(logits, -1) == batch["tokens"]
        h = hidden.astype(jnp.float32)
        return (ce * h).sum(), (correct * h).sum(), h.sum()

    @jax.jit
    def sample(params, batch, rng):
        return masked_diffusion.sample(pmodel.logits_fn(model, params, batch), rng, batch["mask"], p.sample_steps,
                                       p.temperature)

    def evaluate(params, step: int):
        ce = acc = n = 0.0
        rec, div = [], []
        for bi, b in enumerate(batches):
            c, a, k = jax.device_get(masked_stats(params, b, jax.random.PRNGKey(1000 + bi)))
            ce, acc, n = ce + c, acc + a, n + k
            draws = np.stack([np.asarray(sample(params, b, jax.random.PRNGKey(10_000 * bi + s)))
                              for s in range(p.eval_samples)])  # [S, B, L]
            mask = np.asarray(b["mask"]) > 0
            native = np.asarray(b["tokens"])
            for j in range(mask.shape[0]):
                m = mask[j]
                if not m.any():
                    continue
                rec.append(float(np.mean([(d[j][m] == native[j][m]).mean() for d in draws])))
                if len(draws) > 1:
                    div.append(float(np.mean([(x[j][m] != y[j][m]).mean() for x, y in itertools.combinations(draws, 2)])))
        out = {"step": step, "perplexity": float(np.exp(ce / max(n, 1.0))), "masked_accuracy": float(acc / max(n, 1.0)),
               "recovery": float(np.mean(rec)) if rec else float("nan"),
               "diversity": float(np.mean(div)) if div else float("nan"), "chains": len(rec)}
        if fold_fn is not None:
            out.update(fold_fn([residues.decode(d) for d in draws[0]], batches))
        return out, None

    return evaluate
