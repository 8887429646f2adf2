"""Write tests/fixtures/qm9_rows.csv: real QM9 rows from the qm9pack wheel (the columns the reader uses).

    .venv/bin/python tools/make_qm9_fixture.py .data/qm9pack-1.0.3-py3-none-any.whl

48 molecules of at most 16 atoms drawn with a fixed seed, plus the first charged (zwitterionic)
molecules RDKit perceives, so the fixture covers formal charges.
"""
import csv
import sys

import numpy as np

from reed_jax.molecule import data

COLUMNS = ("Index", "SMILES", "Elements", "XYZ_Ang") + data.QM9_PROPERTIES


def main(wheel: str, out: str = "tests/fixtures/qm9_rows.csv") -> None:
    rows = data.qm9_rows(wheel)
    small = [r for r in rows if int(r["N_atoms"]) <= 16]
    pick = [small[i] for i in np.random.default_rng(0).choice(len(small), 48, replace=False)]
    charged = [r for r in rows if "+" in r["SMILES"] and data.qm9_molecule(r) is not None][:4]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in pick + charged:
            w.writerow(r)
    print(f"wrote {len(pick) + len(charged)} rows to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
