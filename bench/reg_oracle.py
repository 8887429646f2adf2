"""REG on the digits: is the jointly generated class token what costs it? (docs/family.md)

    python bench/convergence.py --workdir=workdir/family --variants=reg --seeds=0   # writes the shards
    python bench/reg_oracle.py --data=workdir/family/data --entangle=0.03
    python bench/reg_oracle.py --data=workdir/family/data --entangle=1.0

Trains bench/convergence.py's `reg` variant (the same settings, seed and start: SiT depth 4, hidden
128, batch 64, 600 steps) and samples its EMA weights twice with the same draws and labels:
- joint: the library's sampler (the class token generated from noise with the image, then dropped);
- oracle: the class token on its true path `c_t = (1 - t) c_y + t eps`, c_y the mean target vector
  of the sample's label, so only the image is generated.
Both are scored with digits-FD and sample accuracy (500 samples, Heun 10 steps). A large gap says the
image branch uses the token well and the token's own generation is what is missing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from reed_jax import benchmark, config as config_lib, train
from reed_jax.data import pipeline, records
from reed_jax.image import config as image_config, digits, evaluate as image_eval, samplers
from reed_jax.image.digits_fd import DigitsScorer


def reg_config(entangle: float, steps: int, seed: int):
    """bench/convergence.py's `reg` variant at its default settings, with the class-token weight `entangle`."""
    c = image_config.digits_config("reg")
    c.model.update(depth=4, hidden=128, heads=4)
    c.optim.update(lr=1e-3, ema_decay=0.99)
    c.train.update(batch_size=64, steps=steps)
    c.sample.update(method="heun", num_steps=10, batch_size=500)
    c.eval.num_samples = 500
    c.targets.digits_pooled.entangle = entangle
    c.seed = seed
    config_lib.validate(c)
    return c


def main(argv=None) -> dict:
    ap = benchmark.parser(__doc__)
    ap.add_argument("--data", required=True, help="the digits shards of a bench/convergence.py workdir (<workdir>/data)")
    ap.add_argument("--entangle", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    c = reg_config(args.entangle, args.steps, args.seed)
    log = lambda m: print(m, flush=True)
    log(benchmark.machine_line())
    data = pipeline.read_all(args.data, "train")
    scorer = DigitsScorer(digits.fd_params(c, args.data, log), digits.load()[0])
    params = benchmark.shared_init({"reg": c}, args.seed)["reg"]
    step_fn, sample_fn = benchmark.compiled("reg", c, image_eval.make_sample_fn)
    state = benchmark.initial_state(c, params, args.seed)
    fields = ["image", "label"] + [records.TARGET_PREFIX + n for n in c.targets]
    it = benchmark.batches({k: data[k] for k in fields}, c.train.batch_size, args.seed)
    for _ in range(c.train.steps):
        state, _ = step_fn(state, next(it))
    labels = (np.arange(c.eval.num_samples) % c.data.num_classes).astype(np.int32)
    out = {"joint": scorer(image_eval.generate(sample_fn, state.ema_params, labels, c.sample.batch_size, seed=12345),
                           labels)}
    model = train.build_model(c)
    pooled = data[records.TARGET_PREFIX + "digits_pooled"]
    class_mean = jnp.asarray(np.stack([pooled[data["label"] == k].mean(0) for k in range(c.data.num_classes)]))

    @jax.jit
    def oracle(p, rng, y):
        k_x, k_e = jax.random.split(rng)
        x1 = jax.random.normal(k_x, (y.shape[0],) + tuple(c.data.image_shape))
        eps = jax.random.normal(k_e, (y.shape[0], pooled.shape[1]))
        f = lambda x, t, yy: model.apply({"params": p}, x, t, yy, with_projectors=False,
                                         cls=(1 - t)[:, None] * class_mean[y] + t[:, None] * eps)[0][0]
        return samplers.sample(f, x1, y, method="heun", num_steps=c.sample.num_steps, rng=rng)

    out["oracle"] = scorer(np.asarray(oracle(state.ema_params, jax.random.PRNGKey(12345), jnp.asarray(labels))), labels)
    for k, v in out.items():
        log(f"entangle {args.entangle}: {k:6s} digits-FD {v['digits_fd']:.2f}  accuracy {v['accuracy']:.3f}")
    return out


if __name__ == "__main__":
    main()
