"""REED on the embedded digits (the default demo): both targets of the digits encoder + curriculum.

    python main.py --config=configs/demo.py --workdir=workdir/demo --mode=precompute
    python main.py --config=configs/demo.py --workdir=workdir/demo --mode=train
    python main.py --config=configs/demo.py --workdir=workdir/demo --mode=sample

`--config=configs/demo.py:repa` and `:sit` give the baselines (same as demo_repa.py / demo_sit.py);
`:irepa`, `:haste` and `:reg` the other recipes of the family (docs/family.md).
"""
from reed_jax.image.config import digits_config


def get_config(variant: str = "reed"):
    return digits_config(variant)
