"""SiT-XL/2 + REED on an accelerator: train-step img/s and MFU, the PyTorch peer, FID-path sampling.

    # a GPU (one prepared run, < 10 min; --budget_s stops starting new train configurations):
    .venv/bin/python bench/accelerator.py --torch_python=/path/to/torch-venv/bin/python \\
        --json=workdir/perf/accelerator.json
    # this CPU, end to end on a tiny model (what the test of this script runs):
    .venv/bin/python bench/accelerator.py --tiny --torch_python=/tmp/fixvenv/bin/python

Prints, per train configuration (model x batch x remat x attention, bf16 compute, float32 params):
compile seconds, step time (median [IQR] over windows, blocked on the result), img/s, img/s per
device and MFU = img/s x analytic train FLOPs per image (reed_jax.image.flops: 3 x forward,
projectors included) / (devices x peak bf16 FLOP/s; 989 TFLOP/s for H100/H200 SXM, `--peak_tflops`
otherwise). The model is the ImageNet REED config (`image.config.imagenet_config(size, 'reed')`:
DINOv2 token target and pooled VLM target at their taps, AdamW, clip, EMA), jitted through
`train.make_train_step` over a (data) mesh of every device. Attention: SiT's `model.attention`
switch ('' = jax picks, 'xla', 'cudnn': jax.nn.dot_product_attention's implementation; cudnn needs
bf16 on an NVIDIA GPU and is skipped elsewhere). Then the PyTorch peer (diffusers DiT + the same
REED heads, bench/vs_torch.py's worker) in bf16 autocast on the same device, and the FID path's
sampling: SDE with `--sample_steps` (250) steps and CFG (the REED preset: scale 1.275 on the
whole interval, so every step runs the model on 2B inputs), the SD-VAE decoder (random weights:
the architecture's cost) and Inception-v3 features (random weights) per batch, with the projected
time of 50K samples. `--tiny`: a 2-block width-64 SiT on 8x8x4 latents, 4 sampling steps, a small
VAE decoder and Inception at 75 px, batch 4: it checks the whole script on a CPU in a few minutes.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import benchmark, parallel, train
from reed_jax.data import records
from reed_jax.image import config as image_config, flops


def make_config(model: str, batch: int, dtype: str, remat: str, attention: str, tiny: bool):
    size = model.split("/")[0]
    c = image_config.imagenet_config(size, "reed")
    over = dict(dtype=dtype, remat=remat, attention=attention)
    if tiny:
        over.update(depth=2, hidden=64, heads=2, projector_width=64)
        c.data.image_shape = (8, 8, 4)
        for t in c.targets.values():  # taps inside the 2 blocks
            if "tap" in t:
                t.tap = "block1"
            else:
                t.depth = 1
    c.model = image_config.sit_model(model, **over)
    c.train.batch_size = batch
    c.mesh.update(data=-1, fsdp=1)
    return c


def synthetic_batch(c, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b, (h, w, ch) = c.train.batch_size, c.data.image_shape
    moments = rng.normal(size=(b, h, w, 2 * ch)).astype(np.float32)
    moments[..., ch:] = np.abs(moments[..., ch:])
    out = {"moments": moments, "label": rng.integers(0, c.data.num_classes, b).astype(np.int32)}
    for name, shape in image_config.target_shapes(c).items():
        out[records.TARGET_PREFIX + name] = rng.normal(size=(b,) + shape).astype(records.np_dtype(c.targets[name].dtype))
    return out


def train_row(c, windows: int, steps: int, peak: float | None) -> dict:
    net, tx = train.build_model(c), train.make_optimizer(c)
    mesh = parallel.make_mesh(c.mesh)
    abstract = train.abstract_state(c, net, tx)
    shardings = parallel.state_shardings(abstract, mesh, train.logical_specs(c, net))
    batch = parallel.global_batch(synthetic_batch(c), mesh)
    step = train.make_train_step(c, net, tx, mesh=mesh, shardings=shardings)
    t0 = time.perf_counter()
    compiled = step.lower(parallel.with_shardings(abstract, shardings), batch).compile()
    compile_s = time.perf_counter() - t0
    state = train.create_state(c, net, tx, shardings)
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    holder = [state]

    def window():
        s = holder[0]
        for _ in range(steps):
            s, m = compiled(s, batch)
        jax.block_until_ready((s, m))
        holder[0] = s

    times = [benchmark.timed_window(window, steps) for _ in range(windows)]
    step_s = benchmark.spread([t.wall for t in times])
    n, b = jax.device_count(), c.train.batch_size
    fpi = flops.train_flops_per_image(c.model, c.data.image_shape, c.targets)
    ips = b / step_s["median"]
    return dict(compile_s=compile_s, step_s=step_s, images_per_s=ips, images_per_s_per_device=ips / n,
                train_gflops_per_image=fpi / 1e9, mfu=ips * fpi / (n * peak) if peak else None,
                loss=float(m["loss/total"]))


def peer_row(c, torch_python: str, device: str, windows: int, steps: int, peak: float | None) -> dict:
    from reed_jax import benchmark as bm

    shapes = image_config.target_shapes(c)
    tap = lambda t: int(t.tap.removeprefix("block")) if "tap" in t else t.depth
    worker = bm.Worker([torch_python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vs_torch.py"),
                        "--torch_worker"])
    try:
        info = worker.ask(cmd="setup", threads=os.cpu_count(), device=device, autocast="bfloat16",
                          hidden=c.model.hidden, heads=c.model.heads, depth=c.model.depth, patch=c.model.patch_size,
                          latent=c.data.image_shape[0], num_classes=c.data.num_classes,
                          proj_width=c.model.projector_width, batch=c.train.batch_size,
                          latent_scale=c.data.latent_scale, grad_clip=c.optim.grad_clip, ema_decay=c.optim.ema_decay,
                          w_gen=1.0, w_align=c.curriculum.align.coeff,
                          targets={n: dict(depth=tap(t), pooled=bool(t.pooled), dim=t.dim, coeff=t.coeff,
                                           shape=list(shapes[n]), dtype=t.dtype) for n, t in c.targets.items()})
        times = [worker.ask(cmd="window", steps=steps)["seconds_per_step"] for _ in range(windows)]
    finally:
        worker.close()
    step_s = benchmark.spread(times)
    fpi = flops.train_flops_per_image(c.model, c.data.image_shape, c.targets)
    ips = c.train.batch_size / step_s["median"]
    return dict(step_s=step_s, images_per_s=ips, mfu=ips * fpi / peak if peak else None, params=info["n_params"])


def sampling_row(c, steps: int, batch: int, tiny: bool, windows: int) -> dict:
    """Seconds per batch of the FID path: sampler (SDE, CFG), VAE decode, Inception features."""
    from reed_jax.image import evaluate, fid_eval, inception, vae as vae_lib

    c.sample.update(method="sde", num_steps=steps, batch_size=batch)
    net = train.build_model(c)
    params = train.init_state(c, net, train.make_optimizer(c)).ema_params
    sample_fn = evaluate.make_sample_fn(c, net)
    if tiny:
        vae, inc_size = vae_lib.AutoencoderKL(widths=(16, 16), layers=1, groups=8), 75
    else:
        vae, inc_size = vae_lib.AutoencoderKL(), inception.SIZE
    vae_params = vae_lib.init_params(vae, size=8)
    decode = jax.jit(lambda p, z: vae.apply({"params": p}, z / c.data.latent_scale, method=vae.decode))
    extractor = fid_eval.Extractor(inception.init_params(size=inc_size), batch, inc_size)
    labels = jnp.asarray(np.arange(batch) % c.data.num_classes, jnp.int32)

    def one(i):
        t0 = time.perf_counter()
        x = jax.block_until_ready(sample_fn(params, jax.random.PRNGKey(i), labels))
        t1 = time.perf_counter()
        img = fid_eval.to_rgb_uint8(np.asarray(decode(vae_params, x)))
        t2 = time.perf_counter()
        extractor(img)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    t0 = time.perf_counter()
    one(0)  # compile
    compile_s = time.perf_counter() - t0
    parts = [one(i + 1) for i in range(windows)]
    sec = {k: benchmark.spread([p[i] for p in parts]) for i, k in enumerate(("sampler", "vae_decode", "inception"))}
    total = sum(s["median"] for s in sec.values())
    return dict(compile_s=compile_s, seconds=sec, images_per_s=batch / total, images_per_s_sampler=batch /
                sec["sampler"]["median"], hours_50k=50_000 / (batch / total) / 3600 / jax.device_count(),
                image_shape=list(img_shape(c, vae)), cfg_scale=c.sample.cfg_scale)


def img_shape(c, vae):
    f = 2 ** (len(vae.widths) - 1)
    h, w, _ = c.data.image_shape
    return (h * f, w * f, 3)


def main() -> None:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--tiny", action="store_true", help="a tiny model and few steps: runs on a CPU in minutes")
    ap.add_argument("--model", default="XL/2")
    ap.add_argument("--batch", default="256,128,64", help="comma-separated global batches")
    ap.add_argument("--remat", default="none,dots")
    ap.add_argument("--attention", default="cudnn,xla", help="SiT model.attention values ('' = jax's choice)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="steps per window")
    ap.add_argument("--budget_s", type=float, default=300.0,
                    help="start no new train configuration after this many seconds (leaves the peer and sampling)")
    ap.add_argument("--peak_tflops", type=float, default=None)
    ap.add_argument("--torch_python", default="", help="Python with torch + diffusers for the peer ('' = skip)")
    ap.add_argument("--sample_steps", type=int, default=250)
    ap.add_argument("--sample_batch", type=int, default=256)
    a = ap.parse_args()
    if a.tiny:
        a.model, a.windows, a.steps, a.sample_steps, a.sample_batch = "S/2", 2, 1, 4, 4
        a.batch = "4"
    t_start = time.perf_counter()
    print(benchmark.machine_line(), flush=True)
    kind = jax.devices()[0].device_kind
    peak = a.peak_tflops * 1e12 if a.peak_tflops else flops.peak_flops(kind)
    gpu = jax.devices()[0].platform == "gpu"
    rows = []
    best = None
    for batch in (int(x) for x in a.batch.split(",")):
        for remat in a.remat.split(","):
            for attention in a.attention.split(","):
                name = f"SiT-{a.model} batch {batch} {a.dtype} remat={remat} attention={attention or 'auto'}"
                if attention == "cudnn" and not gpu:
                    print(f"{name}: skipped (cudnn attention needs an NVIDIA GPU)", flush=True)
                    continue
                if time.perf_counter() - t_start > a.budget_s:
                    print(f"{name}: skipped (--budget_s={a.budget_s:.0f} spent)", flush=True)
                    continue
                c = make_config(a.model, batch, a.dtype, remat, attention, a.tiny)
                try:
                    r = train_row(c, a.windows, a.steps, peak)
                except Exception as e:  # noqa: BLE001  (one configuration failing, e.g. out of memory)
                    print(f"{name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    rows.append(dict(kind="train", name=name, error=f"{type(e).__name__}: {e}"[:1000]))
                    continue
                rows.append(dict(kind="train", name=name, batch=batch, remat=remat, attention=attention, **r))
                mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (unknown peak)"
                print(f"{name}: compile {r['compile_s']:.1f}s, step {benchmark.format_spread(r['step_s'], '{:.4f}', 's')}, "
                      f"{r['images_per_s']:.1f} img/s ({r['images_per_s_per_device']:.1f}/device), "
                      f"{r['train_gflops_per_image']:.4g} GFLOP/img, MFU {mfu}", flush=True)
                if best is None or r["images_per_s"] > best[1]["images_per_s"]:
                    best = (c, r)
    if a.torch_python and best is not None:
        c = best[0]
        try:
            r = peer_row(c, a.torch_python, "cuda" if gpu else "cpu", a.windows, a.steps, peak)
            rows.append(dict(kind="peer", batch=c.train.batch_size, **r))
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            print(f"torch peer (diffusers DiT + REED heads, bf16 autocast) batch {c.train.batch_size}: step "
                  f"{benchmark.format_spread(r['step_s'], '{:.4f}', 's')}, {r['images_per_s']:.1f} img/s, MFU {mfu}; "
                  f"peer step time / ours {r['step_s']['median'] / best[1]['step_s']['median']:.2f} "
                  f"(ours {best[1]['images_per_s']:.1f} img/s, {best[1]['step_s']['median']:.4f}s/step)", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"torch peer failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    c = make_config(a.model, a.sample_batch, a.dtype, "none", "", a.tiny)
    r = sampling_row(c, a.sample_steps, a.sample_batch, a.tiny, 2 if a.tiny else 1)
    rows.append(dict(kind="sampling", steps=a.sample_steps, batch=a.sample_batch, **r))
    s = r["seconds"]
    print(f"FID path: SDE {a.sample_steps} steps, CFG {r['cfg_scale']}, batch {a.sample_batch} -> images "
          f"{tuple(r['image_shape'])}: sampler {s['sampler']['median']:.3f}s, VAE decode {s['vae_decode']['median']:.3f}s, "
          f"Inception {s['inception']['median']:.3f}s per batch = {r['images_per_s']:.2f} img/s "
          f"(sampler alone {r['images_per_s_sampler']:.2f}); 50K samples in {r['hours_50k']:.2f} h "
          f"on {jax.device_count()} device(s); compile {r['compile_s']:.1f}s", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f}s", flush=True)
    benchmark.write_rows(a.json, rows, {"machine": benchmark.machine_line(), "argv": sys.argv})


if __name__ == "__main__":
    main()
