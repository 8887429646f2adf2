"""REED on the embedded digits (the default demo): both targets of the digits encoder + curriculum.

    python main.py --config=configs/demo.py --workdir=workdir/demo --mode=precompute
    python main.py --config=configs/demo.py --workdir=workdir/demo --mode=train

Targets: the encoder's 4x4 patch tokens (64-d) tapped after block 2 (coefficient 1.0) and its
pooled 128-d vector (the second "modality") on the token mean after block 3 (coefficient 0.5);
w_gen ramps in over the first 10% of training, w_align = 0.5 constant (the headline recipe,
scaled down). `:sit` and `:repa` give the baselines (see demo_sit.py / demo_repa.py).
"""
from reed_jax import config as config_lib


def get_config(variant: str = "reed"):
    c = config_lib.base_config()
    c.model.update(name="SiT-demo/2", depth=4, hidden=128, heads=4, patch_size=2, projector_width=256)
    c.optim.update(lr=1e-3, ema_decay=0.999)
    c.train.update(batch_size=64, steps=1500, log_every=50, eval_every=500, checkpoint_every=500)
    c.sample.update(method="sde", num_steps=50, batch_size=500, grid_per_class=10)
    c.eval.num_samples = 1000
    steps = c.train.steps
    if variant in ("reed", "repa"):
        c.targets.digits_tokens = config_lib.target_template()
        c.targets.digits_tokens.update(depth=2, pooled=False, dim=64, coeff=1.0)
    if variant == "reed":
        c.targets.digits_pooled = config_lib.target_template()
        c.targets.digits_pooled.update(depth=3, pooled=True, dim=128, coeff=0.5)
        c.curriculum.gen.warmup = steps // 10
    elif variant not in ("repa", "sit"):
        raise ValueError(f"configs/demo.py: unknown variant {variant!r}; expected reed, repa or sit")
    return c
