"""Raw images -> tokenizer (VAE) moments + frozen-encoder targets -> ArrayRecord shards (`--mode=precompute`,
`data.source='imagenet'`).

    python main.py --config=configs/imagenet_sit_xl_2_reed.py --workdir=DIR --mode=precompute \\
        --config.paths_root=/data/reed          # or set data.imagenet_dir, precompute.vae_path, ... one by one

Images come from `data.image_source`: an image folder (`data.imagenet_dir`, sorted synset folders)
or a tfds dataset (`data.tfds_name`, read through tfds.data_source); label = sorted synset index.
Per image: ADM center crop to `data.image_size` (256), then the VAE moments (mean, std) of the crop
in [-1, 1] (field `moments`, [32, 32, 8] for SD-VAE; the tokenizer is `data.tokenizer` of
reed_jax.image.latents, whose per-channel normalisation, if any, is folded into the stored moments);
every target whose `encoder` is an image encoder of the registry (`dinov2_vitb14`: REPA's
final-LayerNorm patch tokens, [256, 768]) stored in its `targets.<name>.dtype` (bfloat16 halves the
disk); every `external` target imported from its `source` (REED's VLM vectors as one `.npy` per
image mirroring the image tree, one [N, D] `.npy` in image order, or an `.npz` of `embeddings` and
`index`; count, width and alignment checked first); `label` and `index`. With
`encoder.mode='online'` the image encoders are not run here: the crop itself is stored (field
`pixels`, uint8) and the train step computes their targets.

Weights are local files (see reed_jax.convert.weight_file). The encoders run data-parallel over
the local devices; with several processes each writes its own shards (shard k on process k mod P).
A finished shard (its record count checked; its size and sha256 too when an earlier manifest lists
it) is kept, a missing, half-written or corrupted one is (re)computed, so an interrupted run
resumes; process 0 writes the manifest (count, size and sha256 per shard) at the end.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from reed_jax.data import records
from reed_jax.image import latents, sources as image_sources
from reed_jax.models import encoders


def build_vae(path: str, groups: int, key: str = "precompute.vae_path", tokenizer: str = latents.DEFAULT):
    """(AutoencoderKL, params) of the `tokenizer`'s weights at `path` (diffusers or LDM names; sizes
    inferred from the state dict, latent channels checked against the registry entry)."""
    return latents.load(latents.get(tokenizer), path, groups, key)


def external_embeddings(name: str, target, n: int, relpaths) -> callable:
    """i -> [dim] float32 for an imported target (`targets.<name>.source`), checked for count, width
    and alignment before any compute. `relpaths()` gives each image's `<synset>/<stem>` (used by the
    per-image layout only). See config.target_template for the accepted layouts."""
    src, dim = target.source, target.dim
    key = f"targets.{name}.source={src!r}"
    if os.path.isdir(src):
        files = [os.path.join(src, r + ".npy") for r in relpaths()]
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


def image_targets(config) -> dict:
    """{name: target} of the targets computed by an image encoder of the registry."""
    return {n: t for n, t in config.targets.items() if t.encoder in encoders.image_encoders()}


def _shard_done(path: str, count: int, row: dict | None = None) -> bool:
    """A finished shard: `count` records and, when a previous run's manifest lists it (`row`), the
    size and sha256 recorded there (a shard corrupted since then is recomputed, never re-blessed)."""
    if not os.path.exists(path):
        return False
    if row is not None:
        size = os.path.getsize(path)
        if row.get("count") != count or row.get("bytes", size) != size or records.file_sha256(path) != row.get("sha256"):
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
    online = config.encoder.mode == "online"
    src = image_sources.open_source(d)
    n = len(src)
    if src.num_classes != d.num_classes:
        raise records.DataError(f"data.num_classes={d.num_classes} but the {d.image_source} source has "
                                f"{src.num_classes} classes ({src.info})")
    external = {name: external_embeddings(name, t, n, src.relpaths) for name, t in config.targets.items()
                if t.encoder == encoders.EXTERNAL}
    vae, vae_params = build_vae(p.vae_path, p.vae_groups, tokenizer=d.tokenizer)
    norm = latents.normalisation(latents.get(d.tokenizer), "precompute.vae_path", p.vae_path, d.latent_scale)
    computed = {} if online else {name: encoders.build(name, t, config) for name, t in image_targets(config).items()}
    dtypes = {name: jnp.dtype(t.dtype) for name, t in config.targets.items()}

    def encode(images, params):
        x = images.astype(jnp.float32) / 127.5 - 1.0
        out = {"moments": norm.normalise_moments(vae.apply({"params": params["vae"]}, x, method=vae.encode))}
        if online:
            out["pixels"] = images
        for name, enc in computed.items():
            out[records.TARGET_PREFIX + name] = enc.apply(params["targets"][name], images).astype(dtypes[name])
        return out

    mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    params = jax.device_put({"vae": vae_params, "targets": {name: e.params for name, e in computed.items()}},
                            NamedSharding(mesh, P()))  # frozen weights: one copy per device, passed (not baked in)
    encode = jax.jit(encode, in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P())))
    bs = p.batch_size
    if bs % len(jax.local_devices()):
        n = len(jax.local_devices())
        raise records.DataError(f"precompute.batch_size={bs} must be a multiple of the {n} local devices")
    crop = (d.image_size, d.image_size, 3)
    shapes = jax.eval_shape(encode, jax.ShapeDtypeStruct((bs,) + crop, jnp.uint8), params)
    fields = [records.Field(k, v.shape[1:], jnp.dtype(v.dtype).name) for k, v in shapes.items()]
    fields[1:1] = [records.Field("label", (), "int32"), records.Field("index", (), "int64")]
    fields += [records.Field(records.TARGET_PREFIX + name, (config.targets[name].dim,), config.targets[name].dtype)
               for name in external]
    schema = records.Schema(tuple(fields))
    want = tuple(d.image_shape[:-1]) + (2 * d.image_shape[-1],)
    if schema.field("moments").shape != want:
        raise records.DataError(f"data.image_shape={tuple(d.image_shape)} expects moments of shape {want}; the VAE "
                                f"(data.tokenizer={d.tokenizer!r}, {vae.factor}x downsampling) gives "
                                f"{schema.field('moments').shape} at data.image_size={d.image_size}")

    def examples(lo, hi):
        for s in range(lo, hi, bs):
            idx = np.arange(s, min(s + bs, hi))
            imgs, labels = zip(*(src.example(int(i)) for i in idx))
            imgs = np.stack(imgs)
            pad = bs - len(idx)
            feats = jax.device_get(encode(np.concatenate([imgs, np.zeros((pad,) + crop, np.uint8)]), params))
            for j, i in enumerate(idx):
                yield {**{k: v[j] for k, v in feats.items()}, "label": np.int32(labels[j]), "index": np.int64(i),
                       **{records.TARGET_PREFIX + name: get(int(i)) for name, get in external.items()}}

    schema_path = os.path.join(out_dir, records.SCHEMA_FILE)
    if os.path.exists(schema_path):
        with open(schema_path) as fh:
            if records.Schema.from_json(json.load(fh)) != schema:
                raise records.DataError(f"{out_dir} already holds shards of another schema; remove them or set "
                                        f"data.dir elsewhere: they are not overwritten")
    os.makedirs(out_dir, exist_ok=True)
    with open(schema_path, "w") as fh:
        json.dump(schema.to_json(), fh, indent=1)

    k = d.num_shards
    log(f"{n} images x {schema.record_bytes / 1024:.1f} KiB per record = {n * schema.record_bytes / 1e9:.2f} GB of "
        f"shards in {out_dir} ({', '.join(f'{f.name} {f.shape} {f.dtype}' for f in schema.fields)})")
    bounds = np.linspace(0, n, k + 1).astype(int)
    mine = [i for i in range(k) if i % jax.process_count() == jax.process_index()]
    previous = {}  # a previous run's manifest: kept shards must still match it
    if os.path.exists(os.path.join(out_dir, records.MANIFEST_FILE)):
        previous = {r["file"]: r for r in records.read_manifest(out_dir)[1]["shards"]}
    bar = tqdm(total=sum(bounds[i + 1] - bounds[i] for i in mine), unit="img", desc="precompute", dynamic_ncols=True)
    for i in mine:
        path = os.path.join(out_dir, records.shard_name("train", i, k))
        count = int(bounds[i + 1] - bounds[i])
        if _shard_done(path, count, previous.get(records.shard_name("train", i, k))):
            log(f"shard {i} of {k} already complete, kept")
            bar.update(count)
            continue
        if os.path.exists(path):
            log(f"shard {i} of {k} is incomplete or differs from {records.MANIFEST_FILE}: recomputing it")
        records.write_shard(out_dir, records.shard_name("train", i, k), schema, examples(bounds[i], bounds[i + 1]),
                            on_write=lambda: bar.update(1))
    bar.close()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("precompute shards written")
    if jax.process_index() == 0:
        rows = [records.manifest_row(out_dir, records.shard_name("train", i, k), "train", bounds[i + 1] - bounds[i])
                for i in range(k)]
        records.write_manifest(out_dir, schema, rows, {**src.info, "encoder_mode": config.encoder.mode})
        log(f"wrote {n} records in {k} shards to {out_dir} ({schema.record_bytes} bytes/record)")
    return out_dir
