"""The amino-acid vocabulary: 20 amino acids (ProteinMPNN's alphabetical one-letter order), X, mask.

Token ids: 0..19 `ACDEFGHIKLMNPQRSTVWY`, 20 = X (unknown / non-standard), 21 = MASK (the
absorbing state of the masked diffusion; never a data token, never sampled).
"""
from __future__ import annotations

import numpy as np

ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
X, MASK = 20, 21
VOCAB = 22
THREE_TO_ONE = {
    "ALA": "A", "CYS": "C", "ASP": "D", "GLU": "E", "PHE": "F", "GLY": "G", "HIS": "H", "ILE": "I",
    "LYS": "K", "LEU": "L", "MET": "M", "ASN": "N", "PRO": "P", "GLN": "Q", "ARG": "R", "SER": "S",
    "THR": "T", "VAL": "V", "TRP": "W", "TYR": "Y",
    # common modified residues, as their parent
    "MSE": "M", "SEC": "C", "PYL": "K", "HYP": "P", "SEP": "S", "TPO": "T", "PTR": "Y", "CSO": "C",
}


def encode(seq: str) -> np.ndarray:
    """One-letter string -> int32 token ids (anything outside the 20 is X)."""
    return np.array([ALPHABET.index(a) if a in ALPHABET[:20] else X for a in seq.upper()], np.int32)


def decode(tokens) -> str:
    """Token ids -> one-letter string (MASK as '-')."""
    return "".join("-" if int(t) == MASK else ALPHABET[int(t)] for t in tokens)
