"""ANI-1x in JAX (reed_jax/molecule/ani.py, ani_files.py) against torchani 2.2.4's own PyTorch forward.

The weights are read from the torchani wheel that `make data` puts in .data/ (never downloaded here);
tests/fixtures/ani1x_parity.npz comes from tools/make_ani_fixture.py (torchani on five QM9 molecules).
"""
import ast
import bz2
import csv
import os
import zipfile

import jax
import numpy as np
import pytest
from conftest import qm9_standin_wheel

from reed_jax.molecule import ani, ani_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEEL = os.path.join(ROOT, ".data", "torchani-2.2.4-py3-none-any.whl")
FIX = os.path.join(ROOT, "tests", "fixtures")


def need_wheel() -> str:
    if not os.path.exists(WHEEL):
        pytest.fail(f"{WHEEL} is missing: run `make data` (it downloads the torchani 2.2.4 wheel with the ANI-1x "
                    f"weights into .data/)")
    return WHEEL


@pytest.fixture(scope="module")
def params():
    return ani.params_of(ani_files.load(need_wheel()))


@pytest.fixture(scope="module")
def fixture():
    with np.load(os.path.join(FIX, "ani1x_parity.npz")) as f:
        return dict(f)


def test_parity_with_torchani(params, fixture):
    """AEVs, every member's energy, the ensemble energy (Hartree) and the hidden activations of layers
    1-3 of members 0 and 7 match torchani's forward on real QM9 molecules within 1e-4."""
    sp, xyz = fixture["species"], fixture["coords"]
    out = jax.device_get(jax.jit(lambda s, c: ani.forward(params, s, c, s >= 0))(sp, xyz))
    assert np.abs(out["aev"] - fixture["aev"]).max() <= 1e-4
    members = np.asarray(out["energy_nn"], np.float64) + ani.self_energy(params, sp)
    assert np.abs(members - fixture["member_energies"]).max() <= 1e-4
    assert np.abs(ani.energies(params, sp, xyz) - fixture["energies"]).max() <= 1e-4
    for k in (1, 2, 3):
        for m in (0, 7):
            ref = fixture[f"hidden{k}_m{m}"]
            assert out["hidden_all"][k][m].shape == ref.shape
            assert np.abs(out["hidden_all"][k][m] - ref).max() <= 1e-4, (k, m)
    # the pooled target: member 0's layer-3 activations averaged over real atoms
    pooled = np.asarray(ani.pooled(params, sp, xyz, sp >= 0, layer=3, member=0))
    m = (sp >= 0)[..., None]
    ref = (fixture["hidden3_m0"] * m).sum(1) / m.sum(1)
    assert pooled.shape == (len(sp), 96) and np.abs(pooled - ref).max() <= 1e-4


def test_element_pooling_keeps_the_element_networks_apart(params, fixture):
    """pool='element': per molecule, torchani's layer-3 activations (member 0) averaged over the H, then
    the C, N and O atoms, concatenated in that order (384 = 4 x 96); zeros for an element the molecule
    lacks (molecule 3 has no N); not the one mean over all atoms that pool='mean' gives."""
    sp, xyz = fixture["species"], fixture["coords"]
    got = np.asarray(ani.pooled(params, sp, xyz, sp >= 0, layer=3, member=0, pool="element"))
    ref = np.zeros((len(sp), 4, 96), np.float32)
    for b in range(len(sp)):
        for e in range(4):
            if (sp[b] == e).any():
                ref[b, e] = fixture["hidden3_m0"][b][sp[b] == e].mean(0)
    assert got.shape == (len(sp), 384)
    np.testing.assert_allclose(got, ref.reshape(len(sp), -1), atol=1e-4)
    assert not (sp[3] == 2).any() and (got[3, 2 * 96:3 * 96] == 0).all()
    with pytest.raises(ValueError, match="pooling 'sum' is not one of"):
        ani.pooled(params, sp, xyz, sp >= 0, pool="sum")


def test_atom_order_and_padding_do_not_matter(params, fixture):
    """Permuting a molecule's atoms and padding it further leaves energy and pooled features unchanged; the
    mask, not the species value, marks padding (padded type arrays hold 0 = H there)."""
    sp, xyz = fixture["species"][:1], fixture["coords"][:1]
    n = int((sp >= 0).sum())
    perm = np.random.default_rng(0).permutation(n)
    sp2 = np.zeros((1, n + 5), np.int32)
    xyz2 = np.full((1, n + 5, 3), 7.0, np.float32)  # padding at a real-looking position: must be ignored
    sp2[0, :n], xyz2[0, :n] = sp[0, perm], xyz[0, perm]
    def energy_and_pooled(s, c):
        mask = np.arange(s.shape[1])[None] < n
        out = jax.device_get(jax.jit(lambda s, c, m: ani.forward(params, s, c, m))(s, c, mask))
        m = mask[..., None]
        return out["energy_nn"].mean(0) + ani.self_energy(params, s, mask), (out["hidden"][0] * m).sum(1) / m.sum(1)

    (e1, p1), (e2, p2) = energy_and_pooled(sp, xyz), energy_and_pooled(sp2, xyz2)
    assert abs(e1[0] - e2[0]) < 1e-4
    np.testing.assert_allclose(p1, p2, atol=1e-5)


def test_elements_outside_hcno_are_refused_and_named():
    """QM9 row 132397 (C5H3F2NO) holds fluorine: the helper marks it for dropping and the projection
    refuses it by name."""
    rows = {r["Index"]: r for r in csv.DictReader(open(os.path.join(FIX, "qm9_rows.csv")))}
    els = [ast.literal_eval(rows[i]["Elements"]) for i in ("926", "132397", "112")]
    assert ani.unsupported(els).tolist() == [False, True, False]
    names = ("H", "C", "N", "O", "F")
    types = np.zeros((2, 12), np.int32)
    mask = np.zeros((2, 12), np.int32)
    for b, e in enumerate(els[:2]):
        types[b, :len(e)] = [names.index(x) for x in e]
        mask[b, :len(e)] = 1
    sp = ani.species_of(names, types[:1], mask[:1])
    assert sp[0, :len(els[0])].tolist() == [("H", "C", "N", "O").index(x) for x in els[0]]
    assert (sp[0, len(els[0]):] == -1).all()
    with pytest.raises(ani.UnsupportedElementError, match="'F'.*H', 'C', 'N', 'O'"):
        ani.species_of(names, types, mask)


def _one_member_dir(tmp_path):
    """train0 + the AEV and self-energy files extracted from the wheel into a folder."""
    with zipfile.ZipFile(need_wheel()) as zf:
        for name in zf.namelist():
            rel = name[len(ani_files.WHEEL_ROOT) + 1:]
            if name.startswith(ani_files.WHEEL_ROOT + "/") and (
                    rel in (ani_files.PARAMS_FILE, ani_files.SAE_FILE) or rel.startswith("train0/networks/")):
                os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
                (tmp_path / rel).write_bytes(zf.read(name))
    return tmp_path


def test_reader_checks_sizes_and_names_the_file(tmp_path):
    """A truncated weight file, a description whose counts disagree with its widths, a missing member and
    a file that is not a network each stop the reader with an error naming the file."""
    d = _one_member_dir(tmp_path)
    files = ani_files.load(str(d), ensemble_size=1)
    assert files.models[0]["C"][0].weight.shape == (144, 384)
    w = d / "train0/networks/ANN-C.nnf-l2.wparam"
    good = w.read_bytes()
    w.write_bytes(good[:-4])
    with pytest.raises(ani_files.AniFileError, match=r"ANN-C\.nnf-l2\.wparam: 64508 bytes.*16128"):
        ani_files.load(str(d), ensemble_size=1)
    w.write_bytes(good)
    nnf = d / "train0/networks/ANN-N.nnf"
    raw = nnf.read_bytes()
    text = ani_files.decompress_nnf(raw, "x").replace("l1.bparam[128]", "l1.bparam[129]")
    body = bz2.compress(text.encode("ascii"))
    nnf.write_bytes(f"{len(body)}=\n".encode() + body)
    with pytest.raises(ani_files.AniFileError, match=r"ANN-N\.nnf: layer 1 .*biases\[129\]"):
        ani_files.load(str(d), ensemble_size=1)
    nnf.write_bytes(b"not a network")
    with pytest.raises(ani_files.AniFileError, match=r"ANN-N\.nnf: not a NeuroChem network file"):
        ani_files.load(str(d), ensemble_size=1)
    nnf.write_bytes(raw)
    with pytest.raises(ani_files.AniFileError, match="train1/networks/ANN-H.nnf: missing"):
        ani_files.load(str(d), ensemble_size=2)
    os.remove(d / "train0/networks/ANN-O.nnf-l4.bparam")
    with pytest.raises(ani_files.AniFileError, match=r"ANN-O\.nnf-l4\.bparam: missing"):
        ani_files.load(str(d), ensemble_size=1)


def test_precompute_drops_fluorine_and_stores_standardised_ani_targets(tmp_path):
    """`--mode=precompute` with an 'ani1x' target on real QM9 rows: the fluorine molecule is dropped and
    counted, and the stored target is member 0's layer-3 activations averaged over atoms, standardised
    with the training split's statistics."""

    import ml_collections

    from reed_jax import config as config_lib, targets
    from reed_jax.data import pipeline, precompute, records
    from reed_jax.molecule import chem, config as molecule_config, encoder

    qm9 = qm9_standin_wheel(tmp_path / "qm9pack-0-py3-none-any.whl")  # a stand-in with the fixture's rows
    c = molecule_config.molecule_config("reed")
    c.targets = ml_collections.ConfigDict()
    c.targets.ani1x = targets.make(tap="layer2", pooled=True, dim=96, proj_width=16, encoder=encoder.ANI_ENCODER)
    c.molecule.update(qm9_wheel=str(qm9), ani_wheel=need_wheel(), train_limit=0, eval_limit=0, layers=2,
                      max_atoms=16, size_buckets=())
    config_lib.validate(c)
    logs = []
    out = precompute.precompute(c, str(tmp_path / "shards"), logs.append)
    _, manifest = records.read_manifest(out)
    assert "qm9_132397" not in manifest["molecules"]["train"]  # C5H3F2NO (split seed 0 puts it in train)
    assert any(m.startswith("ani1x: dropped 1 of 40 train molecules") and "(F)" in m for m in logs), logs
    assert any(m.startswith("ani1x: dropped 0 of") and "validation" in m for m in logs)
    tr, va = pipeline.read_all(out, "train"), pipeline.read_all(out, "validation")
    raw_tr = encoder.ani_pooled(WHEEL, tr, chem.QM9_ELEMENTS, layer=3, member=0)
    raw_va = encoder.ani_pooled(WHEEL, va, chem.QM9_ELEMENTS, layer=3, member=0)
    mean, std = raw_tr.mean(0), raw_tr.std(0)
    assert tr["target/ani1x"].shape == (len(tr["mask"]), 96)
    np.testing.assert_allclose(tr["target/ani1x"], (raw_tr - mean) / std, atol=2e-4)
    np.testing.assert_allclose(va["target/ani1x"], (raw_va - mean) / std, atol=2e-4)
    c.targets.ani1x.dim = 128
    with pytest.raises(records.DataError, match="encoder 'ani1x' have dim \\[128\\].*ani_layer=3, ani_pool='mean' "
                                                "gives 96"):
        precompute.precompute(c, str(tmp_path / "shards2"), lambda *_: None)
    # molecule.ani_pool='element': the per-element means (4 x 96), standardised the same way
    c.targets.ani1x.dim = 384
    c.molecule.ani_pool = "element"
    config_lib.validate(c)
    out = precompute.precompute(c, str(tmp_path / "shards3"), lambda *_: None)
    tr = pipeline.read_all(out, "train")
    raw_tr = encoder.ani_pooled(WHEEL, tr, chem.QM9_ELEMENTS, layer=3, member=0, pool="element")
    mean, std = raw_tr.mean(0), raw_tr.std(0)
    np.testing.assert_allclose(tr["target/ani1x"], (raw_tr - mean) / np.maximum(std, 1e-6), atol=2e-4)
    c.molecule.ani_pool = "sum"
    with pytest.raises(config_lib.ConfigError, match="molecule.ani_pool"):
        config_lib.validate(c)
