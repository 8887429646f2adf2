"""Our SiT + REED train step against a PyTorch peer, alternating windows in one run.

    .venv/bin/python bench/vs_torch.py --torch_python=/tmp/fixvenv/bin/python \\
        --model=S/2,B/2 --latent=16,32 --batch=16,64 --windows=5 --steps=2 --json=workdir/vs_torch.json
    .venv/bin/python bench/vs_torch.py --model=S/2 --latent=16 --batch=16 --profile=workdir/vs_torch_profile

Ours: `reed_jax.train.make_train_step` of the ImageNet REED config (`image.config.imagenet_config(size,
'reed')`: SiT-<size>/2, DINOv2 token target [T, 768] bfloat16 at its tap, the pooled VLM target
[3584] float32 at its tap, projectors D -> 2048 -> 2048 -> z, the velocity loss of the linear
path on VAE-moment samples, AdamW, global-norm clipping 1.0, EMA, the non-finite-update guard,
state donated), jitted, float32. `train.cpu_reuse_memory` (reed_jax/hostmem.py, off by default) as
a variant, '|train.cpu_reuse_memory=True', keeps freed host memory for the next step; the peer's
counterpart is `--peer_reuse_memory`.

The peer (a user's alternative): diffusers' `DiTTransformer2DModel` (adaLN-Zero DiT, the same
architecture; its blocks each embed (t, y) themselves) with the same depth/width/heads/patch,
the two REED projector heads (the same MLPs) on forward hooks at the same taps, the same loss
(velocity MSE + w_align x sum_k c_k x -cos), `torch.nn.utils.clip_grad_norm_`, `torch.optim.AdamW`
(foreach) and a foreach-lerp EMA, float32, eager (what diffusers' training scripts run).

How the two runtimes meet: this script runs under the project's venv (jax, no torch) and starts
itself under `--torch_python` (a venv with torch + diffusers, no jax: the `bench` extra) as a
persistent worker (`--torch_worker`, which imports nothing of reed_jax). The parent sends one JSON
line per command over the worker's stdin and reads one JSON line back; it alternates windows
(torch, jax, torch, jax, ...) and never runs both at once. Both use the same threads: the worker
inherits the parent's CPU affinity (`--threads` first CPUs) and calls torch.set_num_threads(threads);
XLA's CPU thread pool sizes itself from the same affinity.

Per configuration it prints both step times (median [IQR; min-max] over windows) and the per-window
ratio ours / peer's (< 1: ours is faster; the issue's goal is <= 0.8), on two clocks: wall time,
and CPU time of the process (all threads; what the step costs, without the time it waited for a
core: the robust figure on a shared, loaded machine, equal to wall time on a quiet one with
--threads=1). `--profile=DIR` also writes
a jax.profiler trace of a few of our steps and prints the split of our step into forward, backward
and update (each jitted alone, timed the same way). `--xla_variants='A;B'` also times our step
under each XLA_FLAGS string, optionally with config overrides after a '|' (a worker process
each, `--jax_worker`), in the same alternation, and prints each variant's ratio to the peer and
to our step under this process's flags and config:

    .venv/bin/python bench/vs_torch.py --threads=1 --model=S/2 --latent=16 --batch=16,64 \
        --xla_variants='--xla_cpu_experimental_ynn_fusion_type=;|model.attention=einsum'
"""
from __future__ import annotations

import json
import os
import sys
import time

# ----------------------------------------------------------------------------- torch worker (no jax here)


def _serve(setup, window, after=None) -> None:
    """A worker's loop: one JSON command per stdin line ('setup' -> setup(msg), any other ->
    window(msg)), one JSON answer per stdout line, until {'cmd': 'quit'}. An exception is answered
    as {'error': ...}, which the parent raises. `after()` runs after each command."""
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        try:
            out = setup(msg) if msg["cmd"] == "setup" else window(msg)
        except Exception as e:  # noqa: BLE001  (reported to the parent, which raises)
            out = {"error": f"{type(e).__name__}: {e}"}
        if after is not None:
            after()
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def _torch_worker() -> None:
    """JSON-lines server: {'cmd': 'setup', ...} builds the peer; {'cmd': 'window', 'steps': n} times n
    steps and answers {'seconds_per_step'}; {'cmd': 'quit'} ends."""
    import numpy as np
    import torch
    from diffusers import DiTTransformer2DModel

    state = {}

    def setup(a):
        torch.manual_seed(0)
        torch.set_num_threads(a["threads"])
        dev = torch.device(a.get("device", "cpu"))
        autocast = a.get("autocast")  # None (float32) or 'bfloat16' (torch.autocast, as AMP training runs)
        d, heads, depth = a["hidden"], a["heads"], a["depth"]
        model = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=d // heads, in_channels=4,
                                      out_channels=4, num_layers=depth, sample_size=a["latent"], patch_size=a["patch"],
                                      activation_fn="gelu-approximate", num_embeds_ada_norm=a["num_classes"],
                                      norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-6)
        proj = torch.nn.ModuleDict({n: torch.nn.Sequential(
            torch.nn.Linear(d, a["proj_width"]), torch.nn.SiLU(), torch.nn.Linear(a["proj_width"], a["proj_width"]),
            torch.nn.SiLU(), torch.nn.Linear(a["proj_width"], t["dim"])) for n, t in a["targets"].items()})
        taps = {}
        for n, t in a["targets"].items():
            model.transformer_blocks[t["depth"] - 1].register_forward_hook(
                lambda mod, inp, out, n=n: taps.__setitem__(n, out))
        if a.get("remat", "none") == "full":  # each block recomputed in backward (ours: model.remat='full')
            model.enable_gradient_checkpointing()
        elif a.get("remat", "none") != "none":
            raise ValueError(f"remat={a['remat']!r}: the peer has 'none' or 'full' (per-block checkpointing)")
        model.to(dev)
        proj.to(dev)
        params = list(model.parameters()) + list(proj.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
        ema = [p.detach().clone() for p in params]
        rng = np.random.default_rng(0)
        b, s = a["batch"], a["latent"]
        moments = torch.from_numpy(rng.normal(size=(b, 8, s, s)).astype(np.float32))
        moments[:, 4:] = moments[:, 4:].abs()
        labels = torch.from_numpy(rng.integers(0, a["num_classes"], b).astype(np.int64))
        moments, labels = moments.to(dev), labels.to(dev)
        targets = {n: torch.from_numpy(rng.normal(size=(b, *t["shape"])).astype(np.float32)).to(
            getattr(torch, t["dtype"])).to(dev) for n, t in a["targets"].items()}
        model.train()

        def step():
            mean, std = moments[:, :4], moments[:, 4:]
            x0 = (mean + std * torch.randn_like(mean)) * a["latent_scale"]
            t = torch.rand(b, device=dev)
            eps = torch.randn_like(x0)
            tb = t[:, None, None, None]
            xt, v = (1 - tb) * x0 + tb * eps, eps - x0
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast == "bfloat16"):
                pred = model(xt, timestep=t * 1000, class_labels=labels).sample
                zs = {n: proj[n](taps[n].mean(1) if tg["pooled"] else taps[n]) for n, tg in a["targets"].items()}
            gen = ((pred.float() - v) ** 2).mean()
            align = 0.0
            for n, tg in a["targets"].items():
                cos = torch.nn.functional.cosine_similarity(zs[n].float(), targets[n].float(), dim=-1, eps=1e-6)
                align = align + tg["coeff"] * (-cos).mean()
            loss = a["w_gen"] * gen + a["w_align"] * align
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, a["grad_clip"], foreach=True)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - a["ema_decay"])
            return loss

        state.update(step=step, n_params=sum(p.numel() for p in params),
                     n_backbone=sum(p.numel() for p in model.parameters()))
        loss = step()  # warm-up (allocator, lazy inits)
        return {"loss": loss.item(), "n_params": state["n_params"], "n_backbone": state["n_backbone"],
                "torch": torch.__version__, "threads": torch.get_num_threads()}

    def window(a):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a["steps"]):
            loss = state["step"]()
        loss.item()
        return {"seconds_per_step": (time.perf_counter() - t0) / a["steps"],
                "cpu_seconds_per_step": (time.process_time() - c0) / a["steps"]}

    if os.environ.get("REED_PEER_REUSE_MEMORY") == "1":  # the same glibc setting as ours (--peer_reuse_memory)
        import importlib.util
        spec = importlib.util.spec_from_file_location(  # the file alone: this worker imports nothing of reed_jax
            "hostmem", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reed_jax", "hostmem.py"))
        hostmem = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hostmem)
        assert hostmem.reuse_freed_memory()
        _serve(setup, window)
        return

    def trim():  # hand freed activation memory back to the OS while the jax side runs (RSS, not speed)
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass

    _serve(setup, window, after=trim)


def _jax_worker() -> None:
    """JSON-lines server for our step under other XLA flags (its environment's XLA_FLAGS, read
    when jax starts): {'cmd': 'setup', 'model', 'latent', 'batch'} builds and compiles the step;
    {'cmd': 'window', 'steps': n} times n steps; {'cmd': 'quit'} ends. Same answers as the torch worker."""
    import jax

    from reed_jax import benchmark, hostmem

    state = {}

    def setup(a):
        state.clear()
        c = our_config(a["model"], a["latent"], a["batch"], a.get("remat", "none"))
        for key, value in a.get("overrides", {}).items():  # 'model.attention': 'einsum', ...
            *path, last = key.split(".")
            node = c
            for part in path:
                node = node[part]
            kind = type(node[last])
            node[last] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        if c.train.cpu_reuse_memory:  # as the trainer does with it (reed_jax/hostmem.py)
            hostmem.reuse_freed_memory()
        step, st, data, _, _ = our_step(c)
        st, m = step(st, data)  # compile + warm-up
        jax.block_until_ready(m)
        state.update(step=step, state=st, data=data)
        return {"ok": True, "xla_flags": os.environ.get("XLA_FLAGS", "")}

    def window(a):
        def run():
            s = state["state"]
            for _ in range(a["steps"]):
                s, m = state["step"](s, state["data"])
            jax.block_until_ready((s, m))
            state["state"] = s
        t = benchmark.timed_window(run, a["steps"])
        return {"seconds_per_step": t.wall, "cpu_seconds_per_step": t.cpu}

    _serve(setup, window)


def jax_variant(spec: str):
    """Our step in a worker process (`--jax_worker` of this file, this Python), as a
    benchmark.Worker with its config overrides: `spec` is 'XLA_FLAGS' or 'XLA_FLAGS|key=value,...'
    (e.g. '|model.attention=einsum'). XLA's flags are fixed per process, so a variant is a process."""
    from reed_jax import benchmark

    flags, _, rest = spec.partition("|")
    w = benchmark.Worker([sys.executable, os.path.abspath(__file__), "--jax_worker"], env=dict(XLA_FLAGS=flags))
    w.overrides = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return w


def torch_peer(python: str, threads: int, reuse_memory: bool = False):
    """The worker (`--torch_worker` of this file) under `python`, as a benchmark.Worker."""
    from reed_jax import benchmark

    return benchmark.Worker([python, os.path.abspath(__file__), "--torch_worker"],
                            env=dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                                     REED_PEER_REUSE_MEMORY=str(int(reuse_memory))))

# ----------------------------------------------------------------------------- our side


def our_config(model: str, latent: int, batch: int, remat: str = "none"):
    from reed_jax.image import config as image_config

    size, patch = model.split("/")
    c = image_config.imagenet_config(size, "reed")
    c.model = image_config.sit_model(model)
    c.data.image_shape = (latent, latent, 4)
    c.train.batch_size = batch
    c.model.remat = remat
    c.model.scan = remat != "none"  # on XLA:CPU remat saves memory only inside the scan (bench/throughput.py)
    return c


def our_step(c, seed: int = 0):
    """(jitted step, state, batch) of the library's train step on synthetic data."""
    import jax
    import numpy as np

    from reed_jax import train
    from reed_jax.image import config as image_config

    net, tx = train.build_model(c), train.make_optimizer(c)
    step = train.make_train_step(c, net, tx)
    state = train.init_state(c, net, tx)
    rng = np.random.default_rng(seed)
    b, (h, w, ch) = c.train.batch_size, c.data.image_shape
    moments = rng.normal(size=(b, h, w, 2 * ch)).astype(np.float32)
    moments[..., ch:] = np.abs(moments[..., ch:])
    batch = {"moments": moments, "label": rng.integers(0, c.data.num_classes, b).astype(np.int32)}
    from reed_jax.data import records
    for name, shape in image_config.target_shapes(c).items():
        batch[records.TARGET_PREFIX + name] = rng.normal(size=(b,) + shape).astype(
            records.np_dtype(c.targets[name].dtype))
    return step, state, jax.device_put(batch), net, tx


def peer_setup(c, threads: int) -> dict:
    from reed_jax.image import config as image_config

    shapes = image_config.target_shapes(c)
    w_gen, w_align = 1.0, c.curriculum.align.coeff
    return dict(cmd="setup", threads=threads, hidden=c.model.hidden, heads=c.model.heads, depth=c.model.depth,
                patch=c.model.patch_size, latent=c.data.image_shape[0], num_classes=c.data.num_classes,
                proj_width=c.model.projector_width, batch=c.train.batch_size, latent_scale=c.data.latent_scale,
                remat=c.model.remat,
                grad_clip=c.optim.grad_clip, ema_decay=c.optim.ema_decay, w_gen=w_gen, w_align=w_align,
                targets={n: dict(depth=int(t.tap.removeprefix("block")), pooled=bool(t.pooled), dim=t.dim,
                                 coeff=t.coeff, shape=list(shapes[n]), dtype=t.dtype) for n, t in c.targets.items()})


def profile_split(c, state, batch, net, tx, windows: int, steps: int, trace_dir: str, log) -> dict:
    """Our step split: forward (loss), forward+backward (value_and_grad), optimizer+EMA alone and the
    library's full step, each jitted alone and timed in alternating windows; plus a jax.profiler
    trace of `steps` library steps in `trace_dir` with its top ops (benchmark.trace_top)."""
    import jax
    import optax

    from reed_jax import benchmark, objective, tracks, train

    losses = tracks.get(c).losses
    targets = {n: dict(t) for n, t in c.targets.items()}

    def loss_fn(params, batch, rng):
        gen, align, t = losses(c, net, params, batch, rng)
        return objective.combine(gen, align, t, 1.0, c.curriculum.align.coeff, targets)[0]

    fwd = jax.jit(loss_fn)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))
    params, rng = state.params, jax.random.PRNGKey(0)

    def update_only(st, grads):
        updates, opt = tx.update(grads, st.opt_state, st.params)
        p = optax.apply_updates(st.params, updates)
        ema = jax.tree.map(lambda e, q: c.optim.ema_decay * e + (1 - c.optim.ema_decay) * q, st.ema_params, p)
        return st.replace(params=p, opt_state=opt, ema_params=ema)

    copy = lambda: jax.tree.map(lambda x: x.copy(), state)
    grads = jax.block_until_ready(fwd_bwd(params, batch, rng)[1])
    steps_fns = {"optimizer+EMA": jax.jit(update_only, donate_argnums=0),
                 "full step (library)": train.make_train_step(c, net, tx)}
    states = {k: copy() for k in steps_fns}

    def stateful(name):
        def one():
            if name == "optimizer+EMA":
                states[name] = steps_fns[name](states[name], grads)
                return states[name].step
            states[name], m = steps_fns[name](states[name], batch)
            return m
        jax.block_until_ready(one())  # compile
        return one

    def timer(fn):
        jax.block_until_ready(fn())

        def window():
            for _ in range(steps):
                out = fn()
            jax.block_until_ready(out)
        return lambda: benchmark.timed_window(window, steps)

    runners = {"forward": timer(lambda: fwd(params, batch, rng)),
               "forward+backward": timer(lambda: fwd_bwd(params, batch, rng)[0])}
    runners.update({k: timer(stateful(k)) for k in steps_fns})
    times = benchmark.alternate(runners, windows)
    out = {k: {"wall": benchmark.spread([t.wall for t in v]), "cpu": benchmark.spread([t.cpu for t in v])}
           for k, v in times.items()}
    if trace_dir:
        step = steps_fns["full step (library)"]
        s = states["full step (library)"]
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                s, m = step(s, batch)
            jax.block_until_ready(m)
        top = benchmark.trace_top(trace_dir, 12)
        out["trace_top"] = top
        log(f"  jax.profiler trace of {steps} library steps: {top['trace']}; op time {top['total_ms']:.0f} ms by kind:")
        for k, ms, n in top["kinds"]:
            log(f"    {ms:9.1f} ms {100 * ms / top['total_ms']:5.1f}% {n:5d}x {k}")
        log("  top single ops: " + ", ".join(f"{k} {ms:.1f} ms" for k, ms, _ in top["ops"][:8]))
    return out

# ----------------------------------------------------------------------------- main


def main() -> None:
    import jax

    from reed_jax import benchmark, hostmem, train  # noqa: F401

    ap = benchmark.parser(__doc__)
    ap.add_argument("--torch_python", default="/tmp/fixvenv/bin/python",
                    help="a Python with torch and diffusers (the bench extra), without jax")
    ap.add_argument("--model", default="S/2,B/2", help="comma-separated SiT sizes")
    ap.add_argument("--latent", default="16,32", help="comma-separated latent sides (x4 channels)")
    ap.add_argument("--batch", default="16,64", help="comma-separated batch sizes")
    ap.add_argument("--windows", type=int, default=5, help="timed windows per side (alternating)")
    ap.add_argument("--steps", type=int, default=2, help="steps per window")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="CPU threads for both sides (the first N CPUs of this process's affinity)")
    ap.add_argument("--profile", default="", help="directory: also time our forward/backward/update split and "
                                                    "write a jax.profiler trace there")
    ap.add_argument("--xla_variants", default="",
                    help="';'-separated variants of our step, each in a worker process alternated with the "
                         "others: 'XLA_FLAGS' or 'XLA_FLAGS|config.key=value,...' (e.g. "
                         "'--xla_cpu_experimental_ynn_fusion_type=;|model.attention=einsum')")
    ap.add_argument("--remat", default="none", choices=("none", "full"),
                    help="per-block rematerialisation on both sides: ours model.remat='full' with "
                         "model.scan=True, the peer's enable_gradient_checkpointing() (what fits B/2's "
                         "16,384-token steps in 23 GB: XLA's temporaries 26.9 GB without)")
    ap.add_argument("--peer_reuse_memory", action="store_true",
                    help="the peer keeps freed memory for reuse (glibc mallopt, reed_jax/hostmem.py), as "
                         "ours does with train.cpu_reuse_memory=True ('|train.cpu_reuse_memory=True' as a variant)")
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[:a.threads]
    os.sched_setaffinity(0, cpus)  # before jax starts its CPU client: XLA's pool sizes itself from it
    print(benchmark.machine_line(), flush=True)
    peer = torch_peer(a.torch_python, a.threads, a.peer_reuse_memory)
    variants = {f"jax[{f}]": jax_variant(f) for f in a.xla_variants.split(";") if f.strip()}
    default_flags = os.environ.get("XLA_FLAGS", "")
    rows = []
    try:
        for model in a.model.split(","):
            for latent in (int(x) for x in a.latent.split(",")):
                for batch in (int(x) for x in a.batch.split(",")):
                    c = our_config(model, latent, batch, a.remat)
                    name = f"SiT-{model} {latent}x{latent}x4 batch {batch}"
                    info = peer.ask(**peer_setup(c, a.threads))
                    for w in variants.values():
                        w.ask(cmd="setup", model=model, latent=latent, batch=batch, remat=a.remat,
                              overrides=w.overrides)
                    if c.train.cpu_reuse_memory:  # as the trainer does with it (reed_jax/hostmem.py)
                        hostmem.reuse_freed_memory()
                    step, state, data, net, tx = our_step(c)
                    n_ours = sum(x.size for x in jax.tree.leaves(state.params))
                    t0 = time.perf_counter()
                    state, m = step(state, data)  # compile + warm-up
                    jax.block_until_ready(m)
                    compile_s = time.perf_counter() - t0
                    holder = [state]

                    def window():
                        s = holder[0]
                        for _ in range(a.steps):
                            s, m = step(s, data)
                        jax.block_until_ready((s, m))
                        holder[0] = s

                    def remote(w):
                        """One timed window of a worker (the peer or a variant of our step)."""
                        def run():
                            r = w.ask(cmd="window", steps=a.steps)
                            return benchmark.Timing(r["seconds_per_step"], r["cpu_seconds_per_step"])
                        return run

                    load0 = os.getloadavg()[0]
                    times = benchmark.alternate({"torch": remote(peer),
                                                 "jax": lambda: benchmark.timed_window(window, a.steps),
                                                 **{k: remote(w) for k, w in variants.items()}},
                                                a.windows, pause=0.3)
                    row = dict(model=model, latent=latent, batch=batch, threads=a.threads, remat=a.remat,
                               params_ours=int(n_ours), params_peer=info["n_params"], compile_s=compile_s,
                               windows=times, load1=[load0, os.getloadavg()[0]], loss_peer=info["loss"])
                    print(f"{name}: params ours {n_ours / 1e6:.2f}M, peer {info['n_params'] / 1e6:.2f}M; "
                          f"compile {compile_s:.1f}s; load {load0:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
                    for clock, i in (("wall", 0), ("cpu", 1)):
                        ours_t, peer_t = [t[i] for t in times["jax"]], [t[i] for t in times["torch"]]
                        ratio = benchmark.paired_ratios(ours_t, peer_t)
                        row[clock] = dict(jax=benchmark.spread(ours_t), torch=benchmark.spread(peer_t), ratio=ratio)
                        print(f"  {clock:4s} ours  {benchmark.format_spread(row[clock]['jax'], '{:.3f}', 's')}/step\n"
                              f"  {clock:4s} torch {benchmark.format_spread(row[clock]['torch'], '{:.3f}', 's')}/step\n"
                              f"  {clock:4s} ratio ours/torch {benchmark.format_spread(ratio, '{:.2f}')} "
                              f"(goal <= 0.80: {'met' if ratio['median'] <= 0.8 else 'NOT met'})", flush=True)
                        for k in variants:
                            var_t = [t[i] for t in times[k]]
                            vs_peer, vs_ours = benchmark.paired_ratios(var_t, peer_t), benchmark.paired_ratios(var_t, ours_t)
                            row[clock][k] = dict(time=benchmark.spread(var_t), ratio=vs_peer, vs_default=vs_ours)
                            print(f"  {clock:4s} {k}: {benchmark.format_spread(row[clock][k]['time'], '{:.3f}', 's')}"
                                  f"/step; / torch {benchmark.format_spread(vs_peer, '{:.2f}')}; / ours with "
                                  f"XLA_FLAGS='{default_flags}' {benchmark.format_spread(vs_ours, '{:.2f}')}", flush=True)
                    if a.profile:
                        sub = os.path.join(a.profile, f"{model.replace('/', '_')}_{latent}_{batch}")
                        split = profile_split(c, holder[0], data, net, tx, max(3, a.windows // 2), a.steps, sub, print)
                        row["split"] = split
                        for k, v in split.items():
                            if "cpu" in v and "median" in v["cpu"]:
                                print(f"  split {k:28s} cpu {benchmark.format_spread(v['cpu'], '{:.3f}', 's')}; "
                                      f"wall median {v['wall']['median']:.3f}s", flush=True)
                    rows.append(row)
                    state = holder[0] = data = None  # free this configuration's buffers
    finally:
        peer.close()
        for w in variants.values():
            w.close()
    benchmark.write_rows(a.json, rows, {"machine": benchmark.machine_line(), "argv": sys.argv})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--torch_worker"]:
        _torch_worker()
    elif sys.argv[1:2] == ["--jax_worker"]:
        _jax_worker()
    else:
        main()
