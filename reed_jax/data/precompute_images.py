"""Image folders -> SD-VAE moments + DINOv2 tokens -> ArrayRecord shards (`--mode=precompute`,
`data.source='imagenet'`).

    python main.py --config=configs/imagenet_sit_xl_2_repa.py --workdir=DIR --mode=precompute \\
        --config.data.imagenet_dir=/data/imagenet/train \\
        --config.precompute.vae_path=/weights/sd-vae-ft-mse/diffusion_pytorch_model.safetensors \\
        --config.precompute.dinov2_path=/weights/dinov2_vitb14.pth

Per image (sorted synset folders, label = synset index): ADM center crop to `data.image_size`
(256), then the VAE moments (mean, std) of the crop in [-1, 1] (field `moments`, [32, 32, 8])
and, for a target named `dinov2`, the final-LayerNorm patch tokens of REPA's preprocessing
(x / 255, ImageNet mean/std, bicubic to `precompute.dinov2_size` = 224; [256, 768]), any
imported embedding (`targets.<name>.source`: REED's VLM vectors as one `.npy` per image in a
folder mirroring the images, one [N, D] `.npy` in image order, or an `.npz` of `embeddings` and
`index`; count, width and alignment checked first), plus `label` and `index`. Weights are local files: `.safetensors`, torch `.pth`/`.pt`/`.bin` (read
without torch) or `.npz`; DINOv2 in the torch-hub or the transformers naming, the VAE in the
diffusers naming. The encoders run data-parallel over the local devices; with several processes
each writes its own shards (shard k on process k mod P). A finished shard (its record count
checked) is kept, a missing or half-written one is (re)computed, so an interrupted run resumes;
process 0 writes the manifest (count and sha256 per shard) at the end.
"""
from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reed_jax.convert import dinov2 as convert_dinov2, safetensors_file, torch_file, vae as convert_vae
from reed_jax.data import imagenet, records
from reed_jax.models import vae as vae_lib
from reed_jax.models.encoders import dinov2 as dinov2_lib

TOKEN_TARGET = "dinov2"


def load_weights(path: str, what: str) -> dict[str, np.ndarray]:
    if not path:
        raise records.DataError(f"precompute.{what} is empty: point it at the local weight file (nothing is downloaded)")
    if not os.path.exists(path):
        raise records.DataError(f"precompute.{what}={path!r} does not exist")
    if path.endswith(".safetensors"):
        return safetensors_file.load(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    return torch_file.load_state_dict(path)


def build_vae(path: str, groups: int):
    sd = load_weights(path, "vae_path")
    widths, i = [], 0
    while f"encoder.down_blocks.{i}.resnets.0.conv1.weight" in sd:
        widths.append(int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]))
        i += 1
    if not widths:
        raise records.DataError(f"precompute.vae_path={path!r} is not a diffusers AutoencoderKL state dict")
    layers = len({m.group(1) for k in sd if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
    model = vae_lib.AutoencoderKL(widths=tuple(widths), layers=layers, groups=groups,
                                  latent=int(sd["quant_conv.weight"].shape[0]) // 2)
    expected = jax.eval_shape(lambda: vae_lib.init_params(model, size=2 ** len(widths) * 4))
    return model, convert_vae.from_diffusers(sd, expected)


def build_dinov2(path: str, heads: int | None):
    sd = load_weights(path, "dinov2_path")
    hub = sd if any(k.startswith("blocks.") for k in sd) else convert_dinov2.transformers_to_hub(sd)
    model = dinov2_lib.DinoV2(**convert_dinov2.model_kwargs(hub, heads or None))
    return model, convert_dinov2.from_torch_hub(hub)


def external_embeddings(name: str, target, paths: list[str], root: str):
    """i -> [dim] float32 for an imported target (`targets.<name>.source`), checked for count, width
    and alignment before any compute. See config.target_template for the accepted layouts."""
    src, n, dim = target.source, len(paths), target.dim
    key = f"targets.{name}.source={src!r}"
    if os.path.isdir(src):
        files = [os.path.join(src, os.path.splitext(os.path.relpath(p, root))[0] + ".npy") for p in paths]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise records.DataError(f"{key}: {len(missing)} of {n} images have no embedding file, e.g. {missing[0]}")
        shape = np.load(files[0], mmap_mode="r").shape
        if shape[-1] != dim or int(np.prod(shape)) != dim:
            raise records.DataError(f"{key}: {files[0]} has shape {shape}; targets.{name}.dim={dim}")

        def get(i):
            v = np.load(files[i]).reshape(-1).astype(np.float32)
            if v.shape != (dim,):
                raise records.DataError(f"{key}: {files[i]} has {v.size} values, expected {dim}")
            return v
        return get
    if not os.path.exists(src):
        raise records.DataError(f"{key} does not exist")
    if src.endswith(".npz"):
        with np.load(src) as f:
            if "embeddings" not in f.files or "index" not in f.files:
                raise records.DataError(f"{key}: an .npz needs arrays 'embeddings' [N, dim] and 'index' [N]; has {f.files}")
            emb, idx = f["embeddings"], f["index"].astype(np.int64)
        if len(idx) != len(emb):
            raise records.DataError(f"{key}: {len(emb)} embeddings but {len(idx)} indices")
        if len(idx) != n or not np.array_equal(np.sort(idx), np.arange(n)):
            raise records.DataError(f"{key}: the index must hold every image index 0..{n - 1} exactly once "
                                    f"({len(idx)} entries, {len(np.unique(idx))} distinct, range "
                                    f"{idx.min() if len(idx) else None}..{idx.max() if len(idx) else None})")
        order = np.empty(n, np.int64)
        order[idx] = np.arange(n)
        emb = emb[order]
    else:
        emb = np.load(src, mmap_mode="r")
        if emb.ndim != 2 or emb.shape[0] != n:
            raise records.DataError(f"{key}: shape {emb.shape}; expected [{n} images (sorted folder order), {dim}]")
    if emb.shape[1] != dim:
        raise records.DataError(f"{key}: embeddings of width {emb.shape[1]}; targets.{name}.dim={dim}")
    return lambda i: np.asarray(emb[i], np.float32)


def _shard_done(path: str, count: int) -> bool:
    if not os.path.exists(path):
        return False
    try:
        from array_record.python.array_record_module import ArrayRecordReader
        r = ArrayRecordReader(path)
        n = r.num_records()
        r.close()
        return n == count
    except Exception:  # noqa: BLE001  (unreadable: rewrite it)
        return False


def precompute_images(config, out_dir: str, log=print) -> str:
    from tqdm import tqdm

    d, p = config.data, config.precompute
    unknown = [n for n, t in config.targets.items() if n != TOKEN_TARGET and not t.source]
    if unknown:
        raise records.DataError(f"targets {unknown}: image-folder precompute computes the '{TOKEN_TARGET}' token target; "
                                f"give other targets (e.g. the VLM vectors) a targets.<name>.source to import")
    paths, labels, synsets = imagenet.list_folder(d.imagenet_dir)
    external = {n: external_embeddings(n, t, paths, d.imagenet_dir) for n, t in config.targets.items() if t.source}
    if len(synsets) != d.num_classes:
        raise records.DataError(f"data.num_classes={d.num_classes} but {d.imagenet_dir!r} has {len(synsets)} class folders")
    vae, vae_params = build_vae(p.vae_path, p.vae_groups)
    dino = (build_dinov2(p.dinov2_path, p.dinov2_heads)
            if TOKEN_TARGET in config.targets and not config.targets[TOKEN_TARGET].source else None)
    if dino is not None and dino[0].hidden != config.targets[TOKEN_TARGET].dim:
        raise records.DataError(f"targets.{TOKEN_TARGET}.dim={config.targets[TOKEN_TARGET].dim} but the DINOv2 weights "
                                f"in {p.dinov2_path!r} have width {dino[0].hidden}")

    def encode(images):
        x = images.astype(np.float32) / 127.5 - 1.0
        out = {"moments": vae.apply({"params": vae_params}, x, method=vae.encode)}
        if dino is not None:
            feats = dino[0].apply({"params": dino[1]}, dinov2_lib.preprocess(images, p.dinov2_size))
            out[records.TARGET_PREFIX + TOKEN_TARGET] = feats["x_norm_patchtokens"]
        return out

    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    encode = jax.jit(encode, in_shardings=NamedSharding(mesh, P("data")))
    bs = p.batch_size
    if bs % len(jax.local_devices()):
        raise records.DataError(f"precompute.batch_size={bs} must be a multiple of the {len(jax.local_devices())} local devices")

    def examples(lo, hi):
        for s in range(lo, hi, bs):
            idx = np.arange(s, min(s + bs, hi))
            imgs = np.stack([imagenet.load(paths[i], d.image_size) for i in idx])
            pad = bs - len(idx)
            feats = jax.device_get(encode(np.concatenate([imgs, np.zeros((pad,) + imgs.shape[1:], imgs.dtype)])))
            for j, i in enumerate(idx):
                yield {"moments": feats["moments"][j], "label": labels[i], "index": np.int64(i),
                       **{k: v[j] for k, v in feats.items() if k.startswith(records.TARGET_PREFIX)},
                       **{records.TARGET_PREFIX + n: get(i) for n, get in external.items()}}

    first = next(examples(0, 1))
    schema = records.Schema.of(first)
    want = tuple(d.image_shape[:-1]) + (2 * d.image_shape[-1],)
    if schema.field("moments").shape != want:
        raise records.DataError(f"data.image_shape={tuple(d.image_shape)} expects moments of shape {want}; the VAE "
                                f"gives {schema.field('moments').shape} at data.image_size={d.image_size}")
    schema_path = os.path.join(out_dir, records.SCHEMA_FILE)
    if os.path.exists(schema_path):
        with open(schema_path) as fh:
            if records.Schema.from_json(json.load(fh)) != schema:
                raise records.DataError(f"{out_dir} already holds shards of another schema; remove them or set "
                                        f"data.dir elsewhere: they are not overwritten")
    os.makedirs(out_dir, exist_ok=True)
    with open(schema_path, "w") as fh:
        json.dump(schema.to_json(), fh, indent=1)

    n, k = len(paths), d.num_shards
    log(f"{n} images x {schema.record_bytes / 1024:.1f} KiB per record = {n * schema.record_bytes / 1e9:.2f} GB of "
        f"shards in {out_dir} ({', '.join(f'{f.name} {f.shape}' for f in schema.fields)})")
    bounds = np.linspace(0, n, k + 1).astype(int)
    mine = [i for i in range(k) if i % jax.process_count() == jax.process_index()]
    bar = tqdm(total=sum(bounds[i + 1] - bounds[i] for i in mine), unit="img", desc="precompute", dynamic_ncols=True)
    for i in mine:
        path = os.path.join(out_dir, records.shard_name("train", i, k))
        count = int(bounds[i + 1] - bounds[i])
        if _shard_done(path, count):
            log(f"shard {i} of {k} already complete, kept")
            bar.update(count)
            continue
        records.write_shard(out_dir, records.shard_name("train", i, k), schema, examples(bounds[i], bounds[i + 1]),
                            on_write=lambda: bar.update(1))
    bar.close()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("precompute shards written")
    if jax.process_index() == 0:
        rows = [records.manifest_row(out_dir, records.shard_name("train", i, k), "train", bounds[i + 1] - bounds[i])
                for i in range(k)]
        records.write_manifest(out_dir, schema, rows, {"source": "imagenet_folder", "root": d.imagenet_dir,
                                                       "synsets": synsets})
        log(f"wrote {n} records in {k} shards to {out_dir} ({schema.record_bytes} bytes/record)")
    return out_dir
