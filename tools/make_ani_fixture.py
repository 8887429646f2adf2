"""Regenerate tests/fixtures/ani1x_parity.npz with torchani's own PyTorch ANI-1x (run by hand once,
never in CI; torch lives only in the shared fixture venv).

    flock /tmp/fixvenv.lock /tmp/fixvenv/bin/pip install -q --no-deps .data/torchani-2.2.4-py3-none-any.whl lark-parser
    /tmp/fixvenv/bin/python tools/make_ani_fixture.py

torchani 2.2.4 with the venv's torch (2.14): two things stand in the way, both met here without
touching torchani or the venv beyond the install above:
- `torchani/__init__.py` imports `pkg_resources` (gone from setuptools >= 81) only to read its own
  version: a 5-line stand-in module is put in `sys.modules` before the import;
- `torchani.models.ANI1x()` looks for `resources/ani-1x_8x.info`, which the wheel ships empty, and
  then tries to download the model zoo: instead the model is assembled exactly as
  `BuiltinEnsemble._from_neurochem_resources` does, with torchani's own loaders
  (`neurochem.Constants`, `AEVComputer(**consts)`, `neurochem.load_sae`,
  `neurochem.load_model_ensemble(species, '<dir>/train', 8)`) on the wheel's `ani-1x_8x` folder.

Molecules: five real QM9 rows of tests/fixtures/qm9_rows.csv (DFT coordinates in Angstrom; none
with F), padded to 16 atoms with species -1. Stored: `species` [B, N] (0..3 = H C N O, -1 pad),
`coords` [B, N, 3] float32, `aev` [B, N, 384], `member_energies` [8, B] float64 (each member's
total energy, Hartree, self energies included), `energies` [B] float64 (the ensemble mean: what
`model((species, coords)).energies` returns), `hidden{k}_m{m}` [B, N, W] float32 for layers
k = 1, 2, 3 (after CELU, zero-padded to the widest element) of members m = 0 and 7.
"""
from __future__ import annotations

import ast
import csv
import importlib.metadata as md
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "ani1x_parity.npz")
ROWS = os.path.join(HERE, "..", "tests", "fixtures", "qm9_rows.csv")
INDICES = ("926", "61101", "112", "691", "271")  # QM9 ids: 10, 14, 9, 14, 13 atoms; H C N O only
PAD = 16
MEMBERS = (0, 7)


def _pkg_resources_shim():
    shim = types.ModuleType("pkg_resources")

    class DistributionNotFound(Exception):
        pass

    shim.DistributionNotFound = DistributionNotFound
    shim.get_distribution = lambda name: types.SimpleNamespace(version=md.version(name))
    sys.modules.setdefault("pkg_resources", shim)


def main():
    _pkg_resources_shim()
    import torch
    import torchani
    from torchani import neurochem

    res = os.path.join(os.path.dirname(torchani.__file__), "resources", "ani-1x_8x")
    consts = neurochem.Constants(os.path.join(res, "rHCNO-5.2R_16-3.5A_a4-8.params"))
    aev_computer = torchani.AEVComputer(**consts)
    shifter = neurochem.load_sae(os.path.join(res, "sae_linfit.dat"))
    ensemble = neurochem.load_model_ensemble(consts.species, os.path.join(res, "train"), 8)
    species_order = list(consts.species)

    rows = {r["Index"]: r for r in csv.DictReader(open(ROWS))}
    B = len(INDICES)
    species = np.full((B, PAD), -1, np.int64)
    coords = np.zeros((B, PAD, 3), np.float32)
    for b, idx in enumerate(INDICES):
        els = ast.literal_eval(rows[idx]["Elements"])
        xyz = np.asarray(ast.literal_eval(rows[idx]["XYZ_Ang"]), np.float32)
        species[b, :len(els)] = [species_order.index(e) for e in els]
        coords[b, :len(els)] = xyz
    sp, xyz = torch.from_numpy(species), torch.from_numpy(coords)

    with torch.no_grad():
        _, aev = aev_computer((sp, xyz))
        member = torch.stack([shifter((sp, ani((sp, aev)).energies)).energies for ani in ensemble])
        full = torchani.nn.Sequential(aev_computer, ensemble, shifter)
        energies = full((sp, xyz)).energies

        out = {"species": species.astype(np.int32), "coords": coords, "aev": aev.numpy().astype(np.float32),
               "member_energies": member.numpy().astype(np.float64), "energies": energies.numpy().astype(np.float64)}
        flat = sp.flatten()
        for m in MEMBERS:
            caught = {}
            for s, e in enumerate(species_order):
                seq = ensemble[m][e]
                celus = [i for i, mod in enumerate(seq) if isinstance(mod, torch.nn.CELU)]
                for k, i in enumerate(celus, 1):
                    seq[i].register_forward_hook(
                        lambda mod, inp, o, s=s, k=k: caught.setdefault(k, {}).__setitem__(s, o.detach().clone()))
            ensemble[m]((sp, aev))
            for k in (1, 2, 3):
                width = max(v.shape[1] for v in caught[k].values())
                h = torch.zeros(B * PAD, width)
                for s, v in caught[k].items():
                    h[(flat == s).nonzero().flatten(), :v.shape[1]] = v
                out[f"hidden{k}_m{m}"] = h.view(B, PAD, width).numpy().astype(np.float32)
            for seq in ensemble[m].values():
                for mod in seq:
                    mod._forward_hooks.clear()
    np.savez_compressed(OUT, **out)
    print(f"torch {torch.__version__}, torchani {torchani.__version__}; wrote {OUT}:",
          {k: v.shape for k, v in out.items()})
    print("energies (Hartree):", out["energies"])


if __name__ == "__main__":
    main()
