"""Scripted FID evaluation (`main.py --mode=evaluate`): sample, decode, quantise, Inception, metrics.

    python main.py --config=configs/<x>.py --workdir=DIR --mode=evaluate \\
        --config.eval.inception_path=/data/pt_inception-2015-12-05-6726825d.pth \\
        --config.eval.reference=/data/VIRTUAL_imagenet256_labeled.npz [--config.eval.fid_samples=50000]

The latest checkpoint's EMA params sample `eval.fid_samples` images in batches of
`eval.fid_batch_size` (sharded over every device and process) with `config.sample` (SDE/ODE,
steps, CFG scale and guidance interval). Batch b has labels `default_rng([seed, b])` uniform over
the classes and noise from `fold_in(seed, b)`, so a rerun gives the same images. Images are
decoded (pixels as they are; latents through the `decode` callable, the SD-VAE decoder),
quantised by truncation as REPA/REED `generate.py` and ADM (`clamp(255 (x + 1) / 2, 0, 255)` then
uint8, i.e. floor; `visualize.to_uint8`; grey images repeated to RGB) and fed
to the FID Inception. Each finished batch's features are written to
`<workdir>/eval/<tag>/batches/batch_XXXXX.npz` (atomically), so a killed evaluation continues with
the next missing batch. At the end the batch files are streamed into FID, sFID, Inception Score
and precision/recall against the reference, which go to stdout, TensorBoard and
`<workdir>/eval/<tag>/metrics.json`. With `eval.save_npz` the images are also written as
`samples.npz` (`arr_0`, uint8 NHWC, streamed) for the official evaluator.

Reference: any `.npz` with `arr_0` (uint8 NHWC images) and/or precomputed `mu`, `sigma`, `mu_s`,
`sigma_s` (ADM's `VIRTUAL_imagenet256_labeled.npz` has both); `write_reference` makes one.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Iterable

import jax
import numpy as np

from reed_jax.convert import torch_file
from reed_jax.image import convert_inception, frechet, grids as visualize, inception, metrics

FEATURES = ("pool_3", "spatial", "logits")


class EvalError(ValueError):
    """A missing or inconsistent evaluation input; the message names it."""


# ----------------------------------------------------------------------------- Inception weights


def check_inputs(eval_cfg, who: str) -> None:
    """The Inception weights and the reference batch exist (checked before any compute)."""
    for key, what in (("inception_path", "pytorch-fid's pt_inception-2015-12-05-6726825d.pth"),
                      ("reference", "a reference batch .npz such as ADM's VIRTUAL_imagenet256_labeled.npz")):
        path = eval_cfg[key]
        if not path:
            raise EvalError(f"{who} needs eval.{key}: {what} (nothing is downloaded)")
        if not os.path.exists(path):
            raise EvalError(f"{who}: eval.{key}={path!r} does not exist")


def save_inception_params(params, path: str) -> None:
    """Converted Inception params as an .npz of '/'-joined names (loads without torch or conversion)."""
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(path, **flat)


def load_inception_params(path: str) -> dict:
    """Params from pytorch-fid's `.pth` (converted here, no torch needed) or from `save_inception_params`."""
    if not path:
        raise EvalError("eval.inception_path is empty: point it at pytorch-fid's "
                        "pt_inception-2015-12-05-6726825d.pth (nothing is downloaded)")
    if not os.path.exists(path):
        raise EvalError(f"eval.inception_path={path!r} does not exist")
    if path.endswith(".npz"):
        out: dict = {}
        with np.load(path) as f:
            for k in f.files:
                node = out
                *parents, leaf = k.split("/")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = f[k]
        return out
    return convert_inception.from_torch(torch_file.load_state_dict(path))


# ----------------------------------------------------------------------------- features


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] in [-1, 1] -> uint8 [N, H, W, 3]: the published pipelines' truncation
    (`visualize.to_uint8`, floor(255 (x + 1) / 2) after clamping); C=1 repeated."""
    x = visualize.to_uint8(images)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise EvalError(f"images with {x.shape[-1]} channels cannot be scored by the Inception network (needs 1 or 3)")
    return x


class Extractor:
    """uint8 images [N, H, W, 3] -> {pool_3, spatial, logits} float32 numpy, in fixed-size batches."""

    def __init__(self, params, batch_size: int = 100, size: int = inception.SIZE):
        self.params, self.batch_size, self.size = params, batch_size, size
        self.fn = inception.feature_fn(size)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: [] for k in FEATURES}
        for i in range(0, len(images), self.batch_size):
            x = images[i:i + self.batch_size]
            pad = self.batch_size - len(x)
            if pad:
                x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            f = jax.device_get(self.fn(self.params, x))
            for k in FEATURES:
                out[k].append(np.asarray(f[k], np.float32)[:len(x) - pad])
        return {k: np.concatenate(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- reference


def write_reference(images_uint8: np.ndarray, path: str, extractor: Extractor) -> dict:
    """A reference batch in ADM's format: arr_0 plus mu/sigma (pool_3) and mu_s/sigma_s (spatial)."""
    f = extractor(images_uint8)
    mu, sigma = frechet.statistics(f["pool_3"])
    mu_s, sigma_s = frechet.statistics(f["spatial"])
    tmp = path + ".tmp.npz"
    np.savez(tmp, arr_0=images_uint8, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    os.replace(tmp, path)
    return {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s, "pool_3": f["pool_3"]}


def load_reference(path: str, extractor: Extractor, cache_dir: str, log=print) -> dict:
    """mu/sigma/mu_s/sigma_s (stored, or computed from arr_0) and, when arr_0 exists, its pool_3
    features for precision/recall (computed once, cached in `cache_dir`)."""
    if not path:
        raise EvalError("eval.reference is empty: point it at a reference batch .npz "
                        "(ADM's VIRTUAL_imagenet256_labeled.npz, or one from write_reference)")
    if not os.path.exists(path):
        raise EvalError(f"eval.reference={path!r} does not exist")
    with np.load(path) as f:
        keys = set(f.files)
        ref = {k: f[k] for k in ("mu", "sigma", "mu_s", "sigma_s") if k in keys}
        if "arr_0" not in keys and "mu" not in keys:
            raise EvalError(f"eval.reference={path!r} has neither arr_0 (images) nor mu/sigma (statistics): {sorted(keys)}")
        if "arr_0" in keys:
            st = os.stat(path)
            tag = hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
            cache = os.path.join(cache_dir, f"reference_{tag}.npz")
            if os.path.exists(cache):
                with np.load(cache) as c:
                    feats = {k: c[k] for k in c.files}
            else:
                images = f["arr_0"]
                if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                    raise EvalError(f"eval.reference={path!r}: arr_0 must be uint8 [N, H, W, 3], "
                                    f"is {images.dtype} {images.shape}")
                log(f"computing Inception features of the {len(images)} reference images (cached in {cache})")
                feats = {k: v for k, v in extractor(images).items() if k in ("pool_3", "spatial")}
                os.makedirs(cache_dir, exist_ok=True)
                tmp = f"{cache}.tmp{os.getpid()}.npz"  # processes of a multi-host run never share a temp file
                np.savez(tmp, **feats)
                os.replace(tmp, cache)
            ref["pool_3"] = feats["pool_3"]
            if "mu" not in ref:
                ref["mu"], ref["sigma"] = frechet.statistics(feats["pool_3"])
            if "mu_s" not in ref:
                ref["mu_s"], ref["sigma_s"] = frechet.statistics(feats["spatial"])
    if ref["mu"].shape != (2048,):
        raise EvalError(f"eval.reference={path!r}: mu has shape {ref['mu'].shape}, expected (2048,) "
                        f"(pool_3 statistics of the FID Inception)")
    return ref


# ----------------------------------------------------------------------------- batches


def batch_labels(seed: int, b: int, batch_size: int, num_classes: int, balanced_total: int = 0) -> np.ndarray:
    """Class labels [batch_size] of sampling batch `b`: independent uniform draws (ADM's and REPA's
    protocol), or, with `balanced_total` = N (`eval.class_balanced`), batch b's slice of a seeded
    permutation of N / num_classes copies of every class, so the first N samples hold exactly N /
    num_classes of each (the last batch is padded with class 0: samples past N are never scored)."""
    if not balanced_total:
        return np.random.default_rng([seed, b]).integers(0, num_classes, batch_size).astype(np.int32)
    if balanced_total % num_classes:
        raise EvalError(f"class-balanced sampling of {balanced_total} samples needs a multiple of the "
                        f"{num_classes} classes (eval.class_balanced with eval.fid_samples / fid_every_samples)")
    per_class = np.repeat(np.arange(num_classes, dtype=np.int32), balanced_total // num_classes)
    y = np.random.default_rng([seed, num_classes, balanced_total]).permutation(per_class)[b * batch_size:
                                                                                         (b + 1) * batch_size]
    return np.concatenate([y, np.zeros(batch_size - len(y), np.int32)])


def _read_batch(path: str) -> dict | None:
    try:
        with np.load(path) as f:
            out = {k: f[k] for k in f.files}
        return out if all(k in out for k in FEATURES) else None
    except Exception:  # noqa: BLE001  (a half-written or corrupt file is recomputed)
        return None


def run_batches(out_dir: str, num_samples: int, batch_size: int, make_images: Callable[[int], np.ndarray],
                extractor: Extractor, save_images: bool, log=print) -> list[str]:
    """Compute every missing batch file; returns all batch file paths in order."""
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    n_batches = -(-num_samples // batch_size)
    paths = [os.path.join(out_dir, f"batch_{b:05d}.npz") for b in range(n_batches)]
    todo = [b for b in range(n_batches) if _read_batch(paths[b]) is None]
    if len(todo) < n_batches:
        log(f"resuming: {n_batches - len(todo)} of {n_batches} batches already done in {out_dir}")
    bar = tqdm(total=n_batches * batch_size, initial=(n_batches - len(todo)) * batch_size, unit="img",
               desc="evaluate", dynamic_ncols=True, disable=jax.process_index() > 0)
    for b in todo:
        images = make_images(b)
        feats = extractor(images)
        if save_images:
            feats["images"] = images
        if jax.process_index() == 0:
            tmp = paths[b] + ".tmp.npz"
            np.savez(tmp, **feats)
            os.replace(tmp, paths[b])
        bar.update(len(images))
    bar.close()
    return paths


def score(paths: Iterable[str], num_samples: int, ref: dict, pr_k: int = 3, frechet_method: str = "sqrtm") -> dict:
    """Stream batch files (the first `num_samples` samples) into FID, sFID, IS and precision/recall
    (`frechet_method`: see frechet.frechet_distance)."""
    pool_m, spatial_m, is_ = None, None, metrics.InceptionScore()
    pools, seen = [], 0
    for p in paths:
        f = _read_batch(p)
        if f is None:
            raise EvalError(f"batch file {p} is missing or unreadable; rerun --mode=evaluate to recompute it")
        if pool_m is None:  # 2048 (pool_3) with the protocol's Inception
            pool_m = metrics.Moments(f["pool_3"].shape[1])
            if ref["mu"].shape != (f["pool_3"].shape[1],):
                raise EvalError(f"reference mu has shape {ref['mu'].shape}; the samples' pool_3 features have "
                                f"{f['pool_3'].shape[1]} dimensions")
        if spatial_m is None:  # 2023 = 17 x 17 x 7 at the protocol's 299x299
            spatial_m = metrics.Moments(f["spatial"].shape[1])
            if "mu_s" in ref and ref["mu_s"].shape != (f["spatial"].shape[1],):
                raise EvalError(f"reference mu_s has shape {ref['mu_s'].shape}; the samples' spatial features "
                                f"have {f['spatial'].shape[1]} dimensions (different eval.inception_size?)")
        take = min(len(f["pool_3"]), num_samples - seen)
        pool_m.update(f["pool_3"][:take])
        spatial_m.update(f["spatial"][:take])
        is_.update(f["logits"][:take], seen)
        if "pool_3" in ref:
            pools.append(f["pool_3"][:take])
        seen += take
    if pool_m is None:
        raise EvalError("no batch files to score")
    out = {"num_samples": seen,
           "fid": metrics.fid_from_moments(pool_m, ref["mu"], ref["sigma"], frechet_method),
           "sfid": (metrics.fid_from_moments(spatial_m, ref["mu_s"], ref["sigma_s"], frechet_method)
                    if "mu_s" in ref else None),
           "inception_score": is_.score()}
    if "pool_3" in ref:
        out["precision"], out["recall"] = metrics.ManifoldPR(k=pr_k)(ref["pool_3"], np.concatenate(pools))
    else:
        out["precision"] = out["recall"] = None  # the reference has statistics only
    return out


def write_samples_npz(paths: list[str], num_samples: int, out: str) -> None:
    """Stream the saved batch images into `out` (`arr_0`, uint8 NHWC) without holding them all."""
    first = _read_batch(paths[0])["images"]
    npy = out + ".arr_0.npy"
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(num_samples,) + first.shape[1:])
    i = 0
    for p in paths:
        x = _read_batch(p)["images"][: num_samples - i]
        arr[i:i + len(x)] = x
        i += len(x)
    arr.flush()
    del arr
    with zipfile.ZipFile(out + ".tmp", "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.write(npy, "arr_0.npy")
    os.replace(out + ".tmp", out)
    os.remove(npy)
