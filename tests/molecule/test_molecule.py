"""Molecule track: chemistry round trips, equivariance, OT pairing, categorical flows, valence-table
stability, target import and an end-to-end run on real QM9 rows (tests/fixtures/qm9_rows.csv)."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import qm9_standin_wheel

from reed_jax import config as config_lib, modes, targets as targets_lib, train
from reed_jax.data import pipeline, precompute, records
from reed_jax.molecule import chem, config as molecule_config, data, flow, metrics, model as molecule_model
from reed_jax.protein import config as protein_config

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def fixture_rows():
    with open(os.path.join(FIX, "qm9_rows.csv")) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def molecules():
    mols = [data.qm9_molecule(r) for r in fixture_rows()]
    return [m for m in mols if m is not None]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A stand-in for the qm9pack wheel: the same member paths, the fixture's real rows split in three."""
    return qm9_standin_wheel(tmp_path_factory.mktemp("qm9") / "qm9pack-0-py3-none-any.whl")


def test_qm9_rows_perceived_with_charges_and_arrays_round_trip_through_sdf(molecules, tmp_path):
    assert len(molecules) >= 48  # the reader keeps (almost) every real row
    charged = [m for m in molecules if any(a.GetFormalCharge() for a in m.mol.GetAtoms())]
    assert len(charged) >= 2  # zwitterions keep their formal charges
    arrays = [chem.to_arrays(m.mol, chem.QM9_ELEMENTS, 29) for m in molecules]
    mols = [chem.to_mol(a["types"], a["charges"], a["bonds"], a["coords"], a["mask"], chem.QM9_ELEMENTS)
            for a in arrays]
    path = str(tmp_path / "round.sdf")
    chem.write_sdf(mols, path)
    back = chem.read_sdf(path)
    assert len(back) == len(mols)
    for a, m in zip(arrays, back):
        b = chem.to_arrays(m, chem.QM9_ELEMENTS, 29)
        for k in ("types", "charges", "bonds", "mask"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        np.testing.assert_allclose(a["coords"], b["coords"], atol=1e-4)  # SDF keeps 4 decimals
    with pytest.raises(ValueError, match="element Cl is not in the element list"):
        chem.to_arrays(chem._chem().AddHs(chem._chem().MolFromSmiles("CCl")), chem.QM9_ELEMENTS, 29)


def test_valence_table_stability_on_known_molecules(molecules):
    names = chem.QM9_ELEMENTS
    arrays = {k: np.stack([chem.to_arrays(m.mol, names, 29)[k] for m in molecules])
              for k in molecule_model.FIELDS}
    res, _ = metrics.evaluate(arrays, names, train_smiles=[chem.canonical_smiles(m.mol, isomeric=False)
                                                                 for m in molecules])
    assert res["atom_stability"] == 1.0 and res["mol_stability"] == 1.0  # charged ones included
    assert res["validity"] == 1.0 and res["fragment_validity"] == 1.0
    assert res["novelty"] == 0.0 and res["uniqueness"] > 0.9
    # break molecule 0: drop one bond (two atoms under-valent), then make an atom pentavalent
    a = {k: v[0].copy() for k, v in arrays.items()}
    i, j = np.argwhere(np.triu(a["bonds"]) > 0)[0]
    a["bonds"][i, j] = a["bonds"][j, i] = 0
    st = metrics.atom_stable(a["types"], a["charges"], a["bonds"], a["mask"], names)
    assert not st[i] and not st[j] and st.sum() == a["mask"].sum() - 2
    c = {k: v[0].copy() for k, v in arrays.items()}
    carbon = int(np.nonzero((c["types"] == names.index("C")) & (c["mask"] > 0))[0][0])
    h = int(np.nonzero((c["types"] == names.index("H")) & (c["mask"] > 0) & (c["bonds"][carbon] == 0))[0][0])
    c["bonds"][carbon, h] = c["bonds"][h, carbon] = 1
    assert not metrics.atom_stable(c["types"], c["charges"], c["bonds"], c["mask"], names)[carbon]
    # the charge matters: N with four bonds is stable only as N+
    nh4 = chem._chem().AddHs(chem._chem().MolFromSmiles("[NH4+]"))
    from rdkit.Chem import AllChem
    AllChem.EmbedMolecule(nh4, randomSeed=0)
    x = chem.to_arrays(nh4, names, 8)
    assert metrics.atom_stable(x["types"], x["charges"], x["bonds"], x["mask"], names)[:5].all()
    x["charges"][:] = chem.CHARGES.index(0)
    assert not metrics.atom_stable(x["types"], x["charges"], x["bonds"], x["mask"], names)[0]


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("backbone", ["egnn", "semla"])
def test_backbone_equivariant_to_rotation_translation_and_permutation(backbone):
    rng = np.random.default_rng(0)
    b, n = 2, 9
    mask = np.ones((b, n), np.float32)
    mask[1, 6:] = 0
    x = rng.normal(size=(b, n, 3)).astype(np.float32) * 1.5
    types = rng.integers(0, 5, (b, n))
    bonds = np.triu(rng.integers(0, 4, (b, n, n)), 1)
    bonds = bonds + bonds.transpose(0, 2, 1)
    c = molecule_config.molecule_config("reed", backbone=backbone)
    c.molecule.layers = 4
    c.model.update(hidden=16, projector_width=16)
    model = molecule_model.build_model(c)
    assert type(model.net).__name__ == {"egnn": "EGNN", "semla": "Semla"}[backbone]
    params = molecule_model.init_params(c, model, jax.random.PRNGKey(0))
    t = jnp.array([0.3, 0.8])
    run = jax.jit(lambda x, ty, bo, m: model.apply({"params": params}, x, ty, bo, t, m))
    out, feats = run(x, types, bonds, mask)
    rot, shift = random_rotation(rng).astype(np.float32), rng.normal(size=(1, 1, 3)).astype(np.float32)
    out2, feats2 = run((x @ rot + shift) * mask[..., None], types, bonds, mask)
    np.testing.assert_allclose(out2["coords"], out["coords"] @ rot, atol=2e-4)  # centred: the shift drops
    for k in ("types", "charges", "bonds"):
        np.testing.assert_allclose(out2[k], out[k], atol=2e-4)
    np.testing.assert_allclose(feats2["qm9_property"], feats["qm9_property"], rtol=1e-4, atol=1e-4)
    perm = np.concatenate([rng.permutation(6), np.arange(6, n)])  # real atoms of molecule 1 stay first
    out3, feats3 = run(x[:, perm], types[:, perm], bonds[:, perm][:, :, perm], mask[:, perm])
    np.testing.assert_allclose(out3["coords"][1, :6], out["coords"][1, perm[:6]], atol=2e-4)
    np.testing.assert_allclose(out3["bonds"][1][:6, :6], out["bonds"][1][perm[:6]][:, perm[:6]], atol=2e-4)
    np.testing.assert_allclose(feats3["qm9_property"][1], feats["qm9_property"][1], rtol=1e-4, atol=1e-4)
    # padding atoms do not leak: changing them changes nothing of molecule 1's real atoms
    x4 = x.copy()
    x4[1, 6:] = 100.0
    out4, _ = run(x4, types, bonds, mask)
    np.testing.assert_allclose(out4["types"][1, :6], out["types"][1, :6], atol=1e-5)
    np.testing.assert_allclose(out4["coords"][1, :6], out["coords"][1, :6], atol=1e-5)


def test_ot_pairing_beats_random_and_kabsch_recovers_rotation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(12, 3))
    a -= a.mean(0)
    rot = random_rotation(rng)
    np.testing.assert_allclose(flow.kabsch(a, a @ rot), rot, atol=1e-8)
    mask = np.ones((16, 12), np.float32)
    mask[::2, 9:] = 0
    x1 = flow.centred_noise(rng, mask) * 1.3
    x0 = flow.centred_noise(rng, mask)
    paired = np.stack([flow.ot_pair(x0[i], x1[i], int(mask[i].sum())) for i in range(16)])
    assert flow.transport_cost(paired, x1, mask) < 0.6 * flow.transport_cost(x0, x1, mask)
    np.testing.assert_allclose((paired * mask[..., None]).sum(1), 0, atol=1e-9)  # still centred
    np.testing.assert_array_equal(paired[0, 9:], 0) if mask[0, 9:].sum() == 0 else None
    # the paired noise is a rotated permutation of the same points: distances to the centre are kept
    np.testing.assert_allclose(np.sort(np.linalg.norm(paired[1], axis=-1)), np.sort(np.linalg.norm(x0[1], axis=-1)))


def test_categorical_flow_marginals_and_symmetric_bonds():
    key = jax.random.PRNGKey(0)
    x1 = jnp.zeros((4, 20_000), jnp.int32) + 2
    t = jnp.array([0.0, 0.25, 0.5, 0.9])
    xt = flow.corrupt_categorical(key, x1, t, 5)
    np.testing.assert_allclose((xt == 2).mean(1), t + (1 - t) / 5, atol=0.01)  # keep w.p. t, else uniform
    np.testing.assert_allclose((xt == 0).mean(1), (1 - t) / 5, atol=0.01)
    b1 = jnp.ones((3, 40, 40), jnp.int32) * (1 - jnp.eye(40, dtype=jnp.int32))
    # the reference's interpolant: every ordered pair and the diagonal noised independently
    ba = flow.corrupt_bonds(key, b1, jnp.array([0.0, 0.5, 1.0]), 4)
    assert not np.array_equal(ba[1], ba[1].T) and np.diagonal(np.asarray(ba[0])).any()
    np.testing.assert_array_equal(ba[2], b1[2])
    bt = flow.corrupt_bonds(key, b1, jnp.array([0.0, 0.5, 1.0]), 4, symmetric_noise=True)
    np.testing.assert_array_equal(bt, jnp.swapaxes(bt, 1, 2))
    assert np.all(np.diagonal(np.asarray(bt), axis1=1, axis2=2) == 0)
    np.testing.assert_array_equal(bt[2], b1[2])
    off = ~np.eye(40, dtype=bool)
    assert abs(float((bt[1][off] == 1).mean()) - (0.5 + 0.5 / 4)) < 0.05
    grid = flow.time_grid(100)
    assert grid[0] == 0.0 and np.all(np.diff(grid) > 0) and np.diff(grid)[-1] < np.diff(grid)[0]
    # SemlaFlow's 'log' grid: 1 - geomspace(0.01, 1, steps + 1), reversed: 0 ... 0.99
    np.testing.assert_allclose(grid, (1 - np.geomspace(0.01, 1.0, 101))[::-1], atol=1e-12)
    assert grid[-1] == pytest.approx(0.99)


def tiny_config(wheel, variant="reed"):
    c = molecule_config.molecule_config(variant)
    c.molecule.update(qm9_wheel=wheel, train_limit=0, eval_limit=0, layers=2, edge_dim=8, encoder_steps=20,
                      encoder_hidden=8, encoder_layers=1, sample_steps=4, eval_samples=8, energy_samples=2,
                      max_atoms=16, size_buckets=(14, 16))  # size buckets on, as the demo
    c.model.update(hidden=16, projector_width=16)
    if variant == "reed":
        c.targets.qm9_property.update(tap="layer2", dim=8, proj_width=16)
    c.train.update(batch_size=8, steps=4, log_every=2, eval_every=4, checkpoint_every=2)
    c.sample.batch_size = 8
    return c


def test_precompute_train_sample_end_to_end_and_target_import(wheel, tmp_path):
    c = tiny_config(wheel)
    logs = []
    out = precompute.precompute(c, str(tmp_path), logs.append)
    tr = pipeline.read_all(out, "train")
    n_tr = len(tr["mask"])
    assert n_tr >= 35 and tr["target/qm9_property"].shape == (n_tr, 8) and tr["bonds"].shape == (n_tr, 16, 16)
    np.testing.assert_allclose((tr["coords"] * tr["mask"][..., None]).sum(1), 0, atol=1e-4)  # centred
    assert any("property encoder validation MAE" in m for m in logs)
    c.data.dir = out
    # the training iterator's OT-paired prior is part of its resumable state
    it = train.train_iterator(c, out)
    b1, _ = next(it), next(it)
    state = it.get_state()
    b3 = next(it)
    it2 = train.train_iterator(c, out)
    it2.set_state(state)
    b3b = next(it2)
    np.testing.assert_array_equal(b3["index"], b3b["index"])
    np.testing.assert_array_equal(b3["prior"], b3b["prior"])
    assert not np.array_equal(b1["prior"], b3["prior"])
    m = b3["mask"]
    assert flow.transport_cost(b3["prior"], b3["coords"] / molecule_model.coord_scale(c.molecule), m) < flow.transport_cost(
        flow.centred_noise(np.random.default_rng(0), m), b3["coords"] / molecule_model.coord_scale(c.molecule), m)
    it3 = train.train_iterator(c, out)
    sizes = [(b["coords"].shape[1], b["bonds"].shape[1:], b["prior"].shape[1]) for b in (next(it3) for _ in range(6))]
    assert {s[0] for s in sizes} == {14, 16} and all(s[1] == (s[0], s[0]) and s[2] == s[0] for s in sizes)
    res = train.train_and_evaluate(c, str(tmp_path / "run"), log=lambda *_: None)
    assert res["step"] == 4 and 0.0 <= res["atom_stability"] <= 1.0 and os.path.exists(res["samples"])
    # trainer-level resume with the size-bucket iterator's state: the run's step-2 checkpoint (2 steps, with
    # the iterator's position) relaunched to step 4 ends bitwise where the 4 steps in one go ended
    import shutil

    from reed_jax import checkpoint
    shutil.copytree(tmp_path / "run", tmp_path / "resumed", ignore=shutil.ignore_patterns("samples", "tensorboard"))
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    logs2 = []
    res2 = train.train_and_evaluate(c, str(tmp_path / "resumed"), log=logs2.append)
    assert any("resumed from" in m and "at step 2" in m for m in logs2)
    model, tx = train.build_model(c), train.make_optimizer(c)
    states = [checkpoint.restore(checkpoint.manager(str(tmp_path / d)), train.abstract_state(c, model, tx))
              for d in ("run", "resumed")]
    assert int(states[1][0].step) == 4 and states[0][1]["data_iterator"] == states[1][1]["data_iterator"]
    assert json.loads(states[1][1]["data_iterator"])["k"] == 4  # four batches (and OT priors) drawn
    for a, b in zip(jax.tree.leaves(states[0][0]), jax.tree.leaves(states[1][0])):
        np.testing.assert_array_equal(a, b)
    assert res2["atom_stability"] == res["atom_stability"] and res2["validity"] == res["validity"]
    assert len(chem.read_sdf(res["samples"])) == 8
    path = modes.sample_mode(c, str(tmp_path / "run"), log=lambda *_: None)
    assert path == res["samples"]
    # imported target vectors: one .npz with ids, checked by id and width
    _, manifest = records.read_manifest(out)
    ids = manifest["molecules"]["train"] + manifest["molecules"]["validation"]
    vecs = np.random.default_rng(0).normal(size=(len(ids), 6)).astype(np.float32)
    np.savez(tmp_path / "unimol.npz", ids=np.array(ids), vectors=vecs)
    e = tiny_config(wheel, "base")
    e.targets.unimol = targets_lib.make(encoder="external", source=str(tmp_path / "unimol.npz"), dim=6,
                                          tap="layer1", proj_width=16)
    out2 = precompute.precompute(e, str(tmp_path / "ext"), lambda *_: None)
    tr2 = pipeline.read_all(out2, "train")
    np.testing.assert_allclose(tr2["target/unimol"], vecs[:len(tr2["mask"])])
    from reed_jax.molecule import precompute as molecule_precompute
    mols = [data.Molecule(i, None) for i in ids]
    e.targets.unimol.dim = 7
    with pytest.raises(records.DataError, match="targets.unimol: imported vectors have shape \\(6,\\)"):
        molecule_precompute.import_external("unimol", e.targets.unimol, mols)
    np.savez(tmp_path / "partial.npz", ids=np.array(ids[:3]), vectors=vecs[:3])
    e.targets.unimol.update(dim=6, source=str(tmp_path / "partial.npz"))
    with pytest.raises(records.DataError, match="no vector for"):
        molecule_precompute.import_external("unimol", e.targets.unimol, mols)
    os.makedirs(tmp_path / "per_molecule")
    for i, v in zip(ids, vecs):
        np.save(tmp_path / "per_molecule" / f"{i}.npy", v)
    e.targets.unimol.source = str(tmp_path / "per_molecule")
    np.testing.assert_array_equal(molecule_precompute.import_external("unimol", e.targets.unimol, mols), vecs)


@pytest.mark.parametrize("backbone", ["egnn", "semla"])
def test_tiny_overfit(molecules, backbone):
    """The flow-matching loss falls well below its start on 8 molecules (no alignment)."""
    import optax

    c = molecule_config.molecule_config("base", backbone=backbone)
    c.molecule.update(layers=3, max_atoms=16)
    c.model.update(hidden=32)
    model = molecule_model.build_model(c)
    arrays = {k: np.stack([chem.to_arrays(m.mol, chem.QM9_ELEMENTS, 16)[k] for m in molecules[:8]])
              for k in molecule_model.FIELDS}
    arrays["coords"] -= (arrays["coords"] * arrays["mask"][..., None]).sum(1, keepdims=True) / arrays["mask"].sum(
        1)[:, None, None]
    arrays["coords"] *= arrays["mask"][..., None]
    params = molecule_model.init_params(c, model, jax.random.PRNGKey(0))
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    rng = np.random.default_rng(0)

    @jax.jit
    def step(params, opt, batch, key):
        loss_fn = lambda p: molecule_model.losses(c, model, p, batch, key)[0].mean()
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    losses = []
    for i in range(150):
        scale = molecule_model.coord_scale(c.molecule)
        batch = dict(arrays, prior=flow.noise_for_batch(rng, arrays["coords"], arrays["mask"], scale))
        params, opt, loss = step(params, opt, batch, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-20:])


def test_geom_style_readers_on_rdkit_sdf(tmp_path):
    """GEOM-Drugs-like inputs, on the 3D SDF that ships inside RDKit's wheel (365 ligands with H):
    the SDF reader, and the EDM-style [M, 5] arrays (bonds re-perceived from coordinates)."""
    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "PBF", "testData", "egfr.sdf")
    mols = data.read_sdf_dir(path)
    assert len(mols) == 365 and mols[0].name == "ZINC02640583"
    a = chem.to_arrays(mols[0].mol, chem.DRUG_ELEMENTS, 80)
    assert a["mask"].sum() == mols[0].mol.GetNumAtoms() and (a["bonds"] == a["bonds"].T).all()
    with pytest.raises(ValueError, match="exceeds max_atoms=20"):
        chem.to_arrays(mols[0].mol, chem.DRUG_ELEMENTS, 20)
    rows = []
    for i, m in enumerate(mols[:20]):
        xyz = m.mol.GetConformer().GetPositions()
        rows += [[i, at.GetAtomicNum(), *p] for at, p in zip(m.mol.GetAtoms(), xyz)]
    np.save(tmp_path / "geom.npy", np.asarray(rows))
    back = data.read_edm_arrays(str(tmp_path / "geom.npy"))
    assert len(back) >= 17  # a few ligands' bond orders are not recoverable from coordinates alone
    same = sum(chem.canonical_smiles(b.mol, isomeric=False) == chem.canonical_smiles(mols[int(b.name[5:])].mol,
                                                                                      isomeric=False) for b in back)
    assert same >= 0.9 * len(back)
    np.save(tmp_path / "bad.npy", np.zeros((4, 4)))
    with pytest.raises(records.DataError, match="got shape \\(4, 4\\)"):
        data.read_edm_arrays(str(tmp_path / "bad.npy"))


def test_molecule_optimizer_is_amsgrad_with_warmup():
    """AMSGrad with SemlaFlow's warm-up: LinearLR(start_factor=1e-2), i.e. from 1e-2 x lr to lr."""
    import optax

    c = molecule_config.molecule_config("reed")
    assert c.optim.amsgrad and c.optim.warmup_steps == 120 and c.optim.warmup_init == 0.01
    lr = train.learning_rate(c)
    assert float(lr(0)) == pytest.approx(0.01 * c.optim.lr, rel=1e-5)
    assert float(lr(60)) == pytest.approx(c.optim.lr * (0.01 + 0.99 / 2), rel=1e-5)
    assert float(lr(10**6)) == pytest.approx(c.optim.lr, rel=1e-6)
    tx = train.make_optimizer(c)
    params = {"w": jnp.ones((3,))}
    state = tx.init(params)
    assert any(isinstance(s, optax.ScaleByAmsgradState) for s in jax.tree.leaves(
        state, is_leaf=lambda s: isinstance(s, optax.ScaleByAmsgradState)))
    g = {"w": jnp.array([1.0, -2.0, 0.5])}
    upd, state = tx.update(g, state, params)
    np.testing.assert_allclose(np.abs(upd["w"]), 0.01 * c.optim.lr, rtol=1e-3)  # step 0: 1e-2 x lr (Adam: |u| = lr)
    for _ in range(60):
        upd, state = tx.update(g, state, params)
    np.testing.assert_allclose(np.abs(upd["w"]), c.optim.lr * (0.01 + 0.99 * 60 / 120), rtol=1e-3)


@pytest.mark.parametrize("backbone", ["egnn", "semla"])
def test_self_conditioning_is_equivariant_and_used_in_training_and_sampling(backbone):
    rng = np.random.default_rng(3)
    b, n = 2, 7
    mask = np.ones((b, n), np.float32)
    mask[0, 5:] = 0
    x = flow.centred_noise(rng, mask).astype(np.float32)
    types, charges = rng.integers(0, 5, (b, n)), np.zeros((b, n), np.int64)
    bonds = np.zeros((b, n, n), np.int64)
    c = molecule_config.molecule_config("base", backbone=backbone)
    c.molecule.update(layers=2, self_condition=True, sample_steps=3, max_atoms=n)
    c.model.update(hidden=16)
    model = molecule_model.build_model(c)
    params = molecule_model.init_params(c, model, jax.random.PRNGKey(0))
    t = jnp.array([0.4, 0.7])
    run = jax.jit(lambda x, cond: model.apply({"params": params}, x, types, bonds, t, mask, cond=cond)[0])
    first = run(jnp.asarray(x), None)
    cond = molecule_model.as_condition(first)
    out = run(jnp.asarray(x), cond)
    assert not np.allclose(out["types"], first["types"], atol=1e-4)  # the previous prediction is an input
    rot = random_rotation(rng).astype(np.float32)
    out_rot = run(jnp.asarray(x @ rot), dict(cond, coords=cond["coords"] @ rot))
    np.testing.assert_allclose(out_rot["coords"], np.asarray(out["coords"]) @ rot, atol=2e-4)
    np.testing.assert_allclose(out_rot["bonds"], out["bonds"], atol=2e-4)
    batch = {"types": types, "charges": charges, "bonds": bonds, "coords": x * 2.0, "mask": mask,
             "prior": flow.centred_noise(rng, mask).astype(np.float32)}
    gen = jax.jit(lambda p, bt, k: molecule_model.losses(c, model, p, bt, k)[0])(params, batch, jax.random.PRNGKey(1))
    assert gen.shape == (b,) and np.isfinite(gen).all()
    s = molecule_model.make_sampler(c, model)(params, jax.random.PRNGKey(2), mask)
    assert s["bonds"].shape == (b, n, n) and np.all(np.asarray(s["coords"])[0, 5:] == 0)


def test_molecule_configs_validate():
    for v in ("reed", "base"):
        for size in ("demo", "reference"):
            for backbone in ("", "egnn", "semla"):
                config_lib.validate(molecule_config.molecule_config(v, size, backbone=backbone))
    c = molecule_config.molecule_config("reed")
    assert c.targets.qm9_property.tap == "layer4" and c.curriculum.align.coeff == 0.2
    assert c.curriculum.gen.warmup == int(0.15 * c.train.steps)
    ref = molecule_config.molecule_config("reed", "reference")  # METHOD.md section 4: Semla 384 x 12, 32 heads, d_edge 128
    assert (ref.molecule.backbone, ref.model.hidden, ref.molecule.layers, ref.molecule.heads, ref.molecule.edge_dim,
            ref.molecule.coord_sets, ref.molecule.self_condition) == ("semla", 384, 12, 32, 128, 64, True)
    from reed_jax.molecule import track
    sig_e, sig_s = track.signature(molecule_config.molecule_config("reed")), track.signature(
        molecule_config.molecule_config("reed", backbone="semla"))
    assert "backbone" not in sig_e and sig_s["backbone"] == "semla"  # EGNN checkpoints keep their old signature
    with pytest.raises(config_lib.ConfigError, match="unknown backbone 'gnn'"):
        molecule_config.molecule_config("reed", backbone="gnn")


CONFIG_ERRORS = [  # (change to the molecule demo config, the error it must raise)
    (lambda c: c.molecule.update(size_buckets=(16, 24)), "molecule.size_buckets=\\(16, 24\\)"),
    (lambda c: c.targets.qm9_property.update(tap="layer9"), "targets.qm9_property.tap='layer9'"),
    (lambda c: c.data.update(source="proteins"), "track='molecule' with data.source='proteins'"),
    (lambda c: c.molecule.update(backbone="semla", heads=6), "molecule.heads=6 must divide model.hidden=64"),
    (lambda c: c.molecule.update(backbone="transformer"), "molecule.backbone='transformer'"),
]


@pytest.mark.parametrize("change, message", CONFIG_ERRORS)
def test_molecule_config_errors_name_the_key(change, message):
    c = molecule_config.molecule_config("reed")
    change(c)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(c)


def test_molecule_standin_encoder_is_refused_on_the_protein_track():
    p = protein_config.protein_config("reed")
    p.targets.structure.encoder = "qm9_property"
    with pytest.raises(config_lib.ConfigError, match="targets.structure.encoder='qm9_property'"):
        config_lib.validate(p)
