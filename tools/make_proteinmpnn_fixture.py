"""Regenerate tests/fixtures/proteinmpnn_tiny.{pkl,npz}: colabdesign's own haiku ProteinMPNN (run by
hand, never in CI; JAX + haiku, no torch).

    python3 -m venv /tmp/fixvenv   # the shared fixture venv (numpy 2.4 works with jax 0.4.30 here)
    /tmp/fixvenv/bin/pip install "jax[cpu]==0.4.30" dm-haiku==0.0.12 joblib scipy
    /tmp/fixvenv/bin/pip install --no-deps colabdesign==1.1.1
    /tmp/fixvenv/bin/python tools/make_proteinmpnn_fixture.py .data/mdanalysistests-2.11.0.tar.gz

A tiny ProteinMPNN (hidden 16, k 8, 3 + 3 layers) with haiku-initialised random weights (biases and
norms perturbed so every parameter matters), saved with joblib in colabdesign's checkpoint layout;
its logits on the first 40 residues of 1ahsA (mdanalysistests) with the native sequence and an
all-visible decoding mask (`ar_mask` = ones: every residue sees every neighbour's token, the
non-autoregressive decoder the protein track trains). Besides the logits, the npz holds
colabdesign's own intermediate outputs, captured with haiku's method interception (not recomputed
here): `enc_nodes` / `enc_edges` (the last encoder layer's h_V [L, H] and h_E [L, k, H]: the
teacher's `structure` and `pair` targets), `dec{i}_nodes` (decoder layer i's h_V, 1-based; the
last is the `single` target) and `e_idx` [L, k]. colabdesign's package __init__ imports its
AlphaFold code; only the mpnn modules are loaded here.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import sys
import tarfile
import types

import haiku as hk
import jax
import jax.numpy as jnp
import joblib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")
ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
THREE = {"ALA": "A", "CYS": "C", "ASP": "D", "GLU": "E", "PHE": "F", "GLY": "G", "HIS": "H", "ILE": "I", "LYS": "K",
         "LEU": "L", "MET": "M", "ASN": "N", "PRO": "P", "GLN": "Q", "ARG": "R", "SER": "S", "THR": "T", "VAL": "V",
         "TRP": "W", "TYR": "Y"}


def load_mpnn_modules():
    root = os.path.dirname(importlib.util.find_spec("colabdesign").origin)
    for name, sub in (("colabdesign", ""), ("colabdesign.shared", "shared"), ("colabdesign.mpnn", "mpnn")):
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = m
    from colabdesign.mpnn import modules
    return modules


def backbone(archive: str, n: int = 40):
    with tarfile.open(archive) as t:
        m = next(x for x in t.getmembers() if x.name.endswith("dssp/1ahsA.pdb.gz"))
        text = gzip.decompress(t.extractfile(m).read()).decode()
    res = {}
    for line in text.splitlines():
        if line.startswith("ATOM") and line[12:16].strip() in ("N", "CA", "C", "O"):
            key = (int(line[22:26]), line[26])
            xyz = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
            res.setdefault(key, [line[17:20], {}])[1].setdefault(line[12:16].strip(), xyz)
    keys = [k for k in res if len(res[k][1]) == 4][:n]
    x = np.array([[res[k][1][a] for a in ("N", "CA", "C", "O")] for k in keys], np.float32)
    s = np.array([ALPHABET.index(THREE.get(res[k][0], "X")) for k in keys], np.int32)
    return x, s


def main(archive: str):
    modules = load_mpnn_modules()
    cfg = dict(num_letters=21, node_features=16, edge_features=16, hidden_dim=16, num_encoder_layers=3,
               num_decoder_layers=3, k_neighbors=8, augment_eps=0.0, dropout=0.0)
    x, s = backbone(archive)
    n = len(s)
    inputs = {"X": x, "mask": np.ones(n, np.float32), "residue_idx": np.arange(n), "chain_idx": np.zeros(n, np.int32),
              "S": s, "ar_mask": np.ones((n, n), np.float32)}
    fn = hk.transform(lambda i: modules.ProteinMPNN(**cfg).score(i))
    params = fn.init(jax.random.PRNGKey(0), inputs)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a) + rng.normal(0, 0.1, a.shape).astype(np.float32), params)
    taps = {}

    def capture(next_f, args, kwargs, context):  # colabdesign's layer outputs, as it computes them
        out = next_f(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, modules.EncLayer):
            taps["enc_nodes"], taps["enc_edges"] = out
        elif context.method_name == "__call__" and isinstance(context.module, modules.DecLayer):
            taps[f"dec{len([k for k in taps if k.startswith('dec')]) + 1}_nodes"] = out
        elif context.method_name == "__call__" and isinstance(context.module, modules.ProteinFeatures):
            taps["e_idx"] = out[1]
        return out

    def scored(i):
        with hk.intercept_methods(capture):
            out = modules.ProteinMPNN(**cfg).score(i)
        return out, dict(taps)

    fn2 = hk.transform(scored)
    out, got = fn2.apply(params, jax.random.PRNGKey(1), inputs)
    ck = {"num_edges": 8, "noise_level": 0.0, "model_state_dict": jax.tree_util.tree_map(np.asarray, dict(params))}
    joblib.dump(ck, os.path.join(OUT, "proteinmpnn_tiny.pkl"))
    assert sorted(got) == ["dec1_nodes", "dec2_nodes", "dec3_nodes", "e_idx", "enc_edges", "enc_nodes"], sorted(got)
    np.savez(os.path.join(OUT, "proteinmpnn_tiny.npz"), X=x, S=s, logits=np.asarray(out["logits"]),
             **{k: np.asarray(v) for k, v in got.items()})
    print({k: np.asarray(v).shape for k, v in got.items()})
    print("logits", out["logits"].shape, float(jnp.abs(out["logits"]).max()))


if __name__ == "__main__":
    main(sys.argv[1])
