"""iREPA on the embedded digits: REPA's token target with a 3x3 convolutional projector on the token
grid and spatially normalised target tokens (see configs/demo.py for REED).

    python main.py --config=configs/demo_irepa.py --workdir=workdir/demo_irepa --config.data.dir=workdir/demo/data
"""
from reed_jax.image.config import digits_config


def get_config():
    return digits_config("irepa")
