"""The image track's sampling and evaluation: class-conditional samples with the config's sampler
and CFG, sample grids (PNG), digits-FD during training, FID-50K (`--mode=evaluate`, and FID-10K
every `eval.fid_every` steps), and `--mode=sample`'s grid + npz."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import logs, parallel, tracks
from reed_jax.image import grids, samplers, sit as sit_lib

# ----------------------------------------------------------------------------- sampling


def make_sample_fn(config, model):
    """(params, rng, labels [B]) -> samples [B, H, W, C] with the config's sampler and CFG.

    REG: the class token is generated jointly from noise (its own initial draw and SDE noise, the
    same CFG scale and interval) and dropped at the end, as REG's sampler."""
    s = config.sample
    shape = tuple(config.data.image_shape)
    reg = sit_lib.entangled(model.targets)

    @jax.jit
    def fn(params, rng, labels):
        k_x, k_s = jax.random.split(rng)
        b = labels.shape[0]
        x1 = jax.random.normal(k_x, (b,) + shape)
        if reg is None:
            model_fn = lambda x, t, y: model.apply({"params": params}, x, t, y, with_projectors=False)[0]
        else:
            x1 = (x1, jax.random.normal(jax.random.fold_in(k_x, 1), (b, reg.dim)))
            model_fn = lambda x, t, y: model.apply({"params": params}, x[0], t, y, with_projectors=False, cls=x[1])[0]
        v = samplers.guided(model_fn, s.cfg_scale, config.data.num_classes, (s.guidance_lo, s.guidance_hi))
        out = samplers.sample(v, x1, labels, method=s.method, num_steps=s.num_steps, rng=k_s,
                              path=config.diffusion.path)
        return out if reg is None else out[0]

    return fn


def generate(sample_fn, params, labels: np.ndarray, batch_size: int, seed: int, mesh=None) -> np.ndarray:
    """Samples for `labels` in fixed-size batches (the last one padded), deterministic by seed.
    With a mesh, each batch is split over its (data, fsdp) axes."""
    out = []
    for i in range(0, len(labels), batch_size):
        y = labels[i:i + batch_size]
        pad = batch_size - len(y)
        y_full = np.concatenate([y, np.zeros(pad, y.dtype)])
        y_dev = jax.device_put(y_full, parallel.batch_sharding(mesh)) if mesh is not None else jnp.asarray(y_full)
        x = sample_fn(params, jax.random.fold_in(jax.random.PRNGKey(seed), i), y_dev)
        if jax.process_count() > 1:  # every process gets the whole batch
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        out.append(np.asarray(jax.device_get(x))[:len(y)])
    return np.concatenate(out)


def grid_labels(config) -> np.ndarray:
    """One row per class (`sample.grid_classes` of them spread over the labels, 0 = all),
    `sample.grid_per_class` columns."""
    n, k = config.data.num_classes, config.sample.grid_classes
    classes = np.arange(n) if not k or k >= n else np.linspace(0, n - 1, k).round().astype(int)
    return np.repeat(classes, config.sample.grid_per_class).astype(np.int32)

# ----------------------------------------------------------------------------- evaluation


def grid_evaluation(config, workdir: str, sample_fn, params, step: int, scorer=None, log=print,
             mesh=None, render: Callable = lambda x: x) -> tuple[dict, np.ndarray]:
    """Sample a grid (PNG, one row per class; `render` turns samples into images) and, for digits,
    digits-FD and sample accuracy. Returns (result, grid images [N, H, W, C] in [-1, 1])."""
    grid = render(generate(sample_fn, params, grid_labels(config), config.sample.batch_size, config.seed + 1, mesh))
    path = os.path.join(workdir, "samples", f"grid_{step:07d}.png")
    if jax.process_index() == 0:  # files from process 0 only
        grids.save_grid(grid, config.sample.grid_per_class, path, upscale=4)
    result = {"step": step, "grid": path}
    if scorer is not None:
        n = config.eval.num_samples
        labels = (np.arange(n) % config.data.num_classes).astype(np.int32)
        images = generate(sample_fn, params, labels, config.sample.batch_size, config.seed + 2, mesh)
        result.update(scorer(images, labels))
    return result, grid


def fid_evaluate(config, workdir: str, params, step: int, mesh=None, num_samples: int | None = None,
                 decode: Callable | None = None, log=print) -> dict:
    """FID/sFID/IS/precision-recall of `params` (EMA) on `num_samples` (default eval.fid_samples)
    samples; resumable per batch (see reed_jax.image.fid_eval). Returns the metrics."""
    from reed_jax.image import fid_eval

    e, s = config.eval, config.sample
    if config.data.kind == "latents" and decode is None:
        decode = latent_decoder(config)
    n = num_samples or e.fid_samples
    bs = e.fid_batch_size or s.batch_size
    extractor = fid_eval.Extractor(fid_eval.load_inception_params(e.inception_path), e.inception_batch_size,
                                   e.inception_size)
    eval_root = os.path.join(workdir, "eval")
    ref = fid_eval.load_reference(e.reference, extractor, eval_root, log)
    tag = (f"step{step:07d}_{s.method}{s.num_steps}_cfg{s.cfg_scale:g}_{s.guidance_lo:g}-{s.guidance_hi:g}"
           f"_n{n}_seed{config.seed}" + ("" if e.inception_size == 299 else f"_inception{e.inception_size}")
           + ("_balanced" if e.class_balanced else ""))
    out_dir = os.path.join(eval_root, tag)
    from reed_jax.image.track import build_model

    sample_fn = make_sample_fn(config, build_model(config))

    def make_images(b):
        labels = fid_eval.batch_labels(config.seed, b, bs, config.data.num_classes, n if e.class_balanced else 0)
        x = generate(sample_fn, params, labels, bs, seed=config.seed * 1_000_003 + b, mesh=mesh)
        return fid_eval.to_rgb_uint8(decode(x) if decode is not None else x)

    t0 = time.time()
    paths = fid_eval.run_batches(os.path.join(out_dir, "batches"), n, bs, make_images, extractor, e.save_npz, log)
    if jax.process_count() > 1:  # process 0 writes the batch files: every process scores them once all exist
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"fid batches {tag}")
    result = dict(fid_eval.score(paths, n, ref, frechet_method=e.frechet_method), step=step, tag=tag,
                  seconds=time.time() - t0)
    if jax.process_index() == 0:
        logs.write_json(os.path.join(out_dir, "metrics.json"), result)
        if e.save_npz:
            fid_eval.write_samples_npz(paths, n, os.path.join(out_dir, "samples.npz"))
    log(logs.format_metrics(result))
    return result


def decoder_path(config) -> tuple[str, str]:
    """(path, config key) of the SD-VAE whose decoder renders latents: eval.vae_decoder_path (the
    protocol's sd-vae-ft-ema), else precompute.vae_path (the encoder of the shards)."""
    if config.eval.vae_decoder_path:
        return config.eval.vae_decoder_path, "eval.vae_decoder_path"
    return config.precompute.vae_path, "precompute.vae_path"


def latent_decoder(config) -> Callable:
    """latents [B, h, w, C] (x0's space: data.latent_scale times the data.tokenizer-normalised latents)
    -> images [B, H, W, 3] in [-1, 1] through the decoder of `decoder_path(config)`; per-channel
    statistics from beside precompute.vae_path (those the shards were normalised with), else the decoder's."""
    from reed_jax.image import latents, precompute as imagenet_precompute

    path, key = decoder_path(config)
    tok = latents.get(config.data.tokenizer)
    vae, vae_params = imagenet_precompute.build_vae(path, config.precompute.vae_groups, key, tok.name)
    enc = config.precompute.vae_path
    has_stats = enc and any(os.path.exists(p) for p in latents.stats_candidates(enc))
    norm = latents.normalisation(tok, *(("precompute.vae_path", enc) if has_stats else (key, path)),
                                 config.data.latent_scale)
    fn = jax.jit(lambda p, z: vae.apply({"params": p}, norm.denormalise(z), method=vae.decode))
    vae_params = jax.device_put(vae_params)
    return lambda z: np.asarray(fn(vae_params, z))


def grid_renderer(config, log=print) -> Callable:
    """samples -> images in [-1, 1] for PNG grids: pixels as they are; latents decoded by the VAE
    decoder when its weights exist, else (training without them) latent channels 0-2 rescaled."""
    if config.data.kind == "pixels":
        return lambda x: x
    path, key = decoder_path(config)
    if path and os.path.exists(path):
        return latent_decoder(config)
    log(f"{key}={path!r} does not exist: sample grids show latent channels 0-2, not decoded images")
    return lambda z: np.clip(np.asarray(z)[..., :3] / 2.0, -1.0, 1.0)


# ----------------------------------------------------------------------------- hooks


def preflight(config, mode: str) -> None:
    """The FID inputs (Inception weights, reference batch, the VAE decoder of latent models) exist
    before any compute: for 'evaluate', and for 'train' with eval.fid_every."""
    from reed_jax.image import fid_eval

    if mode == "train" and config.eval.fid_every:
        fid_eval.check_inputs(config.eval, f"eval.fid_every={config.eval.fid_every}")
    if mode == "evaluate":
        fid_eval.check_inputs(config.eval, "--mode=evaluate")
        path, key = decoder_path(config)
        if config.data.kind == "latents" and not os.path.exists(path or ""):
            raise fid_eval.EvalError(f"--mode=evaluate of a latent model needs {key} (an SD-VAE whose decoder "
                                     f"renders the samples; eval.vae_decoder_path, else precompute.vae_path); "
                                     f"{path!r} does not exist")


def evaluations(config, workdir: str, data_dir: str, model, mesh, log=print) -> list:
    """A sample grid (PNG; digits: + digits-FD and sample accuracy) every train.eval_every steps, and
    FID-`eval.fid_every_samples` every eval.fid_every steps when set."""
    scorer = None
    if config.data.source == "digits":
        from reed_jax.image import digits
        from reed_jax.image.digits_fd import DigitsScorer
        scorer = DigitsScorer(digits.fd_params(config, data_dir, log), digits.load()[0])
    sample_fn, render = make_sample_fn(config, model), grid_renderer(config, log)

    def grid_eval(params, step):
        result, images = grid_evaluation(config, workdir, sample_fn, params, step, scorer, log, mesh, render)
        return result, grids.grid(grids.to_uint8(images), config.sample.grid_per_class)

    out = [tracks.Evaluation("eval", config.train.eval_every, grid_eval)]
    if config.eval.fid_every:
        n = config.eval.fid_every_samples
        fid = lambda params, step: (fid_evaluate(config, workdir, params, step, mesh, n, log=log), None)
        out.append(tracks.Evaluation(f"fid{n}", config.eval.fid_every, fid, history=False))
    return out


def evaluate(config, workdir: str, model, params, step: int, mesh, log=print) -> dict:
    """FID-`eval.fid_samples` (with sFID, IS, precision/recall) of `params`."""
    return fid_evaluate(config, workdir, params, step, mesh, log=log)


def sample(config, workdir: str, model, params, step: int, mesh, log=print) -> str:
    """A grid (one row per class) as PNG and npz (`arr_0`, uint8 NHWC; latents too for latent models)."""
    labels = grid_labels(config)
    samples = generate(make_sample_fn(config, model), params, labels, config.sample.batch_size, config.seed + 3, mesh)
    images = grid_renderer(config, log)(samples)
    out = os.path.join(workdir, "samples", f"sample_{step:07d}.png")
    if jax.process_index() == 0:  # files from process 0 only
        grids.save_grid(images, config.sample.grid_per_class, out, upscale=4)
        np.savez(out.replace(".png", ".npz"), arr_0=grids.to_uint8(images), labels=labels,
                 **({"latents": samples} if config.data.kind == "latents" else {}))
        log(f"wrote {out} and {out.replace('.png', '.npz')}")
    return out
