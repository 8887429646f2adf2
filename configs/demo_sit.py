"""SIT baseline on the embedded digits (see configs/demo.py for REED).

    python main.py --config=configs/demo_sit.py --workdir=workdir/demo_sit --config.data.dir=workdir/demo/data
"""
from reed_jax.image.config import digits_config


def get_config():
    return digits_config("sit")
