"""Protein metrics on held-out backbones: perplexity, masked accuracy, recovery, diversity.

- perplexity: exp of the mean (unsmoothed) cross-entropy over masked residues, with masks drawn as
  in training (t ~ U[t_min, t_max], fixed seed), so runs and checkpoints compare;
- perplexity_all: the same over every real residue, masked or not (the reference's logged
  "perplexity": its loss_nll over mask_for_loss with the noisy sequence as input);
- masked accuracy: argmax accuracy on those masked residues;
- recovery: fraction of residues where a fully sampled sequence (the masked-diffusion sampler,
  `protein.sample_steps` grid points at `protein.temperature`, X allowed per
  `protein.sample_allow_x`) equals the native, averaged over chains and `protein.eval_samples`
  samples each (the reference's valid_sp_acc pools residues over chains instead);
- diversity: mean pairwise Hamming distance / length between the samples of the same backbone.
A folding model (ESMFold or similar) for self-consistency RMSD and pLDDT plugs in through
`fold_fn(sequences, backbones) -> {'sc_rmsd': [...], 'plddt': [...]}` when local weights exist.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax.protein import masked_diffusion, model as pmodel, residues


@functools.partial(jax.jit, static_argnames=("model", "t_min", "t_max"))
def masked_stats(params, batch, rng, *, model, t_min: float, t_max: float):
    """(sum of CE, correct, count) over residues masked as in training, then (sum of CE, count) over every
    real residue."""
    noisy, _, hidden = masked_diffusion.corrupt(rng, batch["tokens"], batch["mask"], t_min, t_max)
    logits = pmodel.logits_fn(model, params, batch)(noisy)
    ce = masked_diffusion.smoothed_cross_entropy(logits, batch["tokens"], 0.0)
    correct = jnp.argmax(logits, -1) == batch["tokens"]
    h = hidden.astype(jnp.float32)
    real = (batch["mask"] > 0).astype(jnp.float32)
    return (ce * h).sum(), (correct * h).sum(), h.sum(), (ce * real).sum(), real.sum()


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "temperature", "allow_x", "t_min"))
def sample_sequences(params, batch, rng, *, model, num_steps: int, temperature: float, allow_x: bool = True,
                     t_min: float = 0.01):
    """Designed sequences [B, L] for the batch's backbones (jitted once per model and shape)."""
    return masked_diffusion.sample(pmodel.logits_fn(model, params, batch), rng, batch["mask"], num_steps, temperature,
                                   allow_x, t_min)


def designer(config, model):
    """(params, batch, rng) -> sequences [B, L] with the config's sampler settings."""
    p = config.protein
    return functools.partial(sample_sequences, model=model, num_steps=p.sample_steps, temperature=p.temperature,
                             allow_x=bool(p.sample_allow_x), t_min=p.t_min)


def sequence_metrics(draws: np.ndarray, native: np.ndarray, mask: np.ndarray) -> tuple[list[float], list[float]]:
    """draws [S, B, L] sampled tokens, native [B, L], mask [B, L] -> (recovery per chain: the fraction of
    real residues equal to the native, averaged over the S samples; diversity per chain (S > 1 only):
    the mean over sample pairs of the fraction of real residues where they differ). Chains without a
    real residue are skipped."""
    rec, div = [], []
    mask = mask > 0
    for j in range(mask.shape[0]):
        m = mask[j]
        if not m.any():
            continue
        rec.append(float(np.mean([(d[j][m] == native[j][m]).mean() for d in draws])))
        if len(draws) > 1:
            div.append(float(np.mean([(x[j][m] != y[j][m]).mean() for x, y in itertools.combinations(draws, 2)])))
    return rec, div


def make_evaluator(config, model, batches: list[dict], fold_fn: Callable | None = None, sample_metrics: bool = True):
    """batches: held-out padded batches {coords, mask, residue_idx, tokens}. Returns
    evaluate(params, step) -> ({metrics}, None); `sample_metrics=False` skips recovery/diversity."""
    p = config.protein
    stats = functools.partial(masked_stats, model=model, t_min=p.t_min, t_max=p.t_max)
    design = designer(config, model)

    def evaluate(params, step: int):
        ce = acc = n = ce_all = n_all = 0.0
        rec, div = [], []
        for bi, b in enumerate(batches):
            c, a, k, c_all, k_all = jax.device_get(stats(params, b, jax.random.PRNGKey(1000 + bi)))
            ce, acc, n, ce_all, n_all = ce + c, acc + a, n + k, ce_all + c_all, n_all + k_all
            if not sample_metrics:
                continue
            draws = np.stack([np.asarray(design(params, b, jax.random.PRNGKey(10_000 * bi + s)))
                              for s in range(p.eval_samples)])  # [S, B, L]
            r, d = sequence_metrics(draws, np.asarray(b["tokens"]), np.asarray(b["mask"]))
            rec, div = rec + r, div + d
        out = {"step": step, "perplexity": float(np.exp(ce / max(n, 1.0))), "masked_accuracy": float(acc / max(n, 1.0)),
               "perplexity_all": float(np.exp(ce_all / max(n_all, 1.0))),
               "recovery": float(np.mean(rec)) if rec else float("nan"),
               "diversity": float(np.mean(div)) if div else float("nan"), "chains": len(rec)}
        if fold_fn is not None:
            out.update(fold_fn([residues.decode(d) for d in draws[0]], batches))
        return out, None

    return evaluate


def evaluate(config, workdir: str, model, params, step: int, mesh, log=print) -> dict:
    """`--mode=evaluate`: the metrics of `params` (the latest EMA; the raw params when optim.ema_decay = 0,
    as the reference evaluates) on the held-out backbones."""
    from reed_jax.data import precompute

    batches = pmodel.eval_batches(precompute.data_dir(config, workdir), "validation", config.sample.batch_size)
    result, _ = make_evaluator(config, model, batches)(params, step)
    return result


def sample(config, workdir: str, model, params, step: int, mesh, log=print) -> str:
    """`--mode=sample`: `protein.eval_samples` designs per held-out backbone -> FASTA with recovery."""
    import os

    from reed_jax.data import pipeline, precompute

    p = config.protein
    names = pipeline.read_all(precompute.data_dir(config, workdir), "validation",
                              list(pmodel.BATCH_FIELDS) + ["index", "length"])
    batches = pmodel.pad_batches({k: names[k] for k in pmodel.BATCH_FIELDS}, config.sample.batch_size)
    design = designer(config, model)
    lines, k = [], 0
    for bi, b in enumerate(batches):
        draws = [np.asarray(design(params, b, jax.random.PRNGKey(10_000 * bi + s))) for s in range(p.eval_samples)]
        for j in range(b["mask"].shape[0]):
            if k >= len(names["index"]):
                break
            n, m = int(names["length"][k]), np.asarray(b["mask"][j]) > 0
            native = residues.decode(np.asarray(b["tokens"][j])[:n])
            lines += [f">index_{int(names['index'][k])} native", native]
            for s, d in enumerate(draws):
                rec = float((d[j][m] == np.asarray(b["tokens"][j])[m]).mean())
                lines += [f">index_{int(names['index'][k])} sample_{s} recovery={rec:.3f}", residues.decode(d[j][:n])]
            k += 1
    out = os.path.join(workdir, "samples", f"sequences_{step:07d}.fasta")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    log(f"wrote {out}")
    return out
