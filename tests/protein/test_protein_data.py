"""Protein track data: PDB / mmCIF / CATH readers, the mdanalysistests archive, filters, splits,
precompute with the teacher, and training end to end on tiny chains."""
import gzip
import io
import json
import os
import tarfile

import jax
import numpy as np
import pytest

from reed_jax import config as config_lib, modes, train
from reed_jax.data import pipeline, precompute, records
from reed_jax.protein import config as protein_config, data, residues, structure

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")

PDB = """\
REMARK   2 RESOLUTION.    1.90 ANGSTROMS.
ATOM      1  N   MET A   1       0.000   0.000   0.000  1.00 10.00           N
ATOM      2  CA AMET A   1       1.458   0.000   0.000  0.50 10.00           C
ATOM      3  CA BMET A   1       9.999   9.999   9.999  0.50 10.00           C
ATOM      4  C   MET A   1       2.009   1.420   0.000  1.00 10.00           C
ATOM      5  O   MET A   1       1.251   2.390   0.000  1.00 10.00           O
ATOM      6  CB  MET A   1       1.988  -0.773  -1.199  1.00 10.00           C
HETATM    7  N   MSE A   2       3.332   1.536   0.000  1.00 10.00           N
HETATM    8  CA  MSE A   2       3.988   2.839   0.000  1.00 10.00           C
HETATM    9  C   MSE A   2       5.504   2.693   0.000  1.00 10.00           C
HETATM   10  O   MSE A   2       6.030   1.580   0.000  1.00 10.00           O
ATOM     11  N   GLY A   2A      6.210   3.820   0.000  1.00 10.00           N
ATOM     12  CA  GLY A   2A      7.660   3.840   0.000  1.00 10.00           C
ATOM     13  C   GLY A   2A      8.200   5.260   0.000  1.00 10.00           C
HETATM   14  O   HOH A 100      50.000  50.000  50.000  1.00 10.00           O
ATOM     15  N   ALA B   1      10.000  10.000  10.000  1.00 10.00           N
ENDMDL
ATOM     16  N   ALA A   9      99.000  99.000  99.000  1.00 10.00           N
"""

CIF = """\
data_test
_refine.ls_d_res_high 2.10
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.label_atom_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_seq_id
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.pdbx_PDB_model_num
ATOM 1 N   TRP A 1 5 X ? 0.0 0.0 0.0 1
ATOM 2 CA  TRP A 1 5 X ? 1.5 0.0 0.0 1
ATOM 3 C   TRP A 1 5 X ? 2.0 1.4 0.0 1
ATOM 4 O   TRP A 1 5 X ? 1.2 2.4 0.0 1
ATOM 5 N   "UNK" A 2 6 X ? 3.3 1.5 0.0 1
ATOM 6 N   TRP A 1 5 X ? 9.0 9.0 9.0 2
#
"""


def test_pdb_reader_altloc_modified_missing_atoms_and_models():
    ch = structure.parse_pdb(PDB, "t")
    assert ch.name == "t.A" and ch.sequence == "MMG" and ch.resolution == 1.9
    np.testing.assert_allclose(ch.coords[0, 1], [1.458, 0, 0])  # first altloc
    np.testing.assert_array_equal(ch.backbone_mask, [True, True, False])  # GLY 2A has no O
    assert np.isnan(ch.coords[2, 3]).all()
    assert structure.parse_pdb(PDB, "t", chain="B").sequence == "A"  # later models ignored
    with pytest.raises(structure.StructureError, match="no chain 'C'"):
        structure.parse_pdb(PDB, "t", chain="C")


def test_mmcif_and_cath_readers(tmp_path):
    ch = structure.parse_mmcif(CIF, "c")
    assert ch.name == "c.X" and ch.sequence == "WX" and ch.resolution == 2.1
    np.testing.assert_allclose(ch.coords[0, 1], [1.5, 0, 0])
    assert not ch.backbone_mask[1]
    entry = {"name": "1abc.A", "seq": "GAV", "coords": {a: [[i, 0, 0], [i, 1, 0], None] for i, a in
                                                         enumerate("N CA C O".split())}}
    entry["coords"] = {a: [[1.0 * i, 0, 0], [i, 1.0, 0], [np.nan] * 3] for i, a in enumerate(("N", "CA", "C", "O"))}
    (tmp_path / "chain_set.jsonl").write_text(json.dumps(entry).replace("NaN", "null") + "\n")
    chains = structure.read_cath_jsonl(str(tmp_path / "chain_set.jsonl"))
    assert chains[0].sequence == "GAV" and chains[0].coords.shape == (3, 4, 3)
    np.testing.assert_array_equal(chains[0].backbone_mask, [True, True, False])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"name": "x", "seq": "GA", "coords": entry["coords"]}) + "\n")
    with pytest.raises(structure.StructureError, match=r"coords \(3, 4, 3\) for 2 residues"):
        structure.read_cath_jsonl(str(tmp_path / "bad.jsonl"))


def helix(n, seed):
    """An ideal-ish alpha helix backbone with noise: [n, 4, 3]."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)[:, None]
    base = np.concatenate([2.3 * np.cos(i * 1.75), 2.3 * np.sin(i * 1.75), 1.5 * i], axis=1)
    offs = np.array([[-0.5, 0.8, -0.6], [0, 0, 0], [0.6, 0.9, 0.7], [1.1, 1.8, 1.1]])
    return base[:, None] + offs[None] + rng.normal(0, 0.05, (n, 4, 3))


def pdb_text(seq, coords):
    three = {v: k for k, v in residues.THREE_TO_ONE.items() if k not in ("MSE", "SEC", "PYL", "HYP", "SEP", "TPO",
                                                                          "PTR", "CSO")}
    lines, k = [], 1
    for r, (a, xyz) in enumerate(zip(seq, coords)):
        for name, p in zip(("N", "CA", "C", "O"), xyz):
            lines.append(f"ATOM  {k:5d}  {name:<3s} {three[a]} A{r + 1:4d}    {p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}"
                         f"  1.00 10.00           {name[0]}")
            k += 1
    return "\n".join(lines) + "\nEND\n"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A stand-in for the mdanalysistests sdist: the same layout, 10 small helices (+ one too short, one failing)."""
    d = tmp_path_factory.mktemp("mda")
    path = d / "mdanalysistests-0.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for j in range(12):
            n = 8 if j == 10 else int(rng.integers(24, 40))
            seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))
            name = f"{j}abc{'A'}{'_failing' if j == 11 else ''}.pdb.gz"
            blob = gzip.compress(pdb_text(seq, helix(n, j)).encode())
            info = tarfile.TarInfo(f"mdanalysistests-0/MDAnalysisTests/data/dssp/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return str(path)


def tiny_protein_config(archive_path, variant="reed"):
    c = protein_config.protein_config(variant)
    c.model.update(hidden=16, projector_width=16)
    c.protein.update(archive=archive_path, teacher_path=os.path.join(FIX, "proteinmpnn_tiny.pkl"), max_length=40,
                     min_length=20, k=6, enc_layers=2, dec_layers=2, validation_fraction=0.2, sample_steps=4,
                     eval_samples=2)
    for t in c.targets.values():
        t.update(dim=16, proj_width=16)
    if variant == "reed":
        c.targets.single.tap = "decoder2_nodes"
    c.train.update(batch_size=4, steps=4, log_every=2, eval_every=4, checkpoint_every=2)
    c.sample.batch_size = 4
    c.curriculum.update(gen=dict(start=0, warmup=1, decay="constant", total_steps=0),
                        align=dict(coeff=0.2, decay="cosine", decay_steps=4))
    return c


def test_archive_filters_and_split(archive):
    chains = data.read_mdanalysistests(archive)
    assert len(chains) == 11 and all(not ch.name.endswith("_failing") for ch in chains)  # the failing file skipped
    p = tiny_protein_config(archive).protein
    logs = []
    kept = data.filter_chains(chains, p, logs.append)
    assert len(kept) == 10 and "skipped: 1 by length" in logs[0]
    s = data.split_chains(kept, p)
    assert len(s["validation"]) == 2 and len(s["train"]) == 8
    assert not {c.name for c in s["train"]} & {c.name for c in s["validation"]}
    assert [c.name for c in data.split_chains(kept, p)["validation"]] == [c.name for c in s["validation"]]
    # clusters: the held-out split takes whole clusters
    groups = {ch.name.split(".")[0]: i // 5 for i, ch in enumerate(kept)}
    p.validation_fraction = 0.5
    g = data.split_chains(kept, p, groups)
    assert len(g["validation"]) == 5


def test_precompute_train_evaluate_end_to_end(archive, tmp_path):
    c = tiny_protein_config(archive)
    c.targets.pair.dtype = "bfloat16"
    c.protein.length_buckets = (32, 40)
    logs = []
    out = precompute.precompute(c, str(tmp_path), logs.append)
    tr = pipeline.read_all(out, "train")
    va = pipeline.read_all(out, "validation")
    assert len(tr["mask"]) == 8 and len(va["mask"]) == 2
    assert tr["target/pair"].shape == (8, 40, 8, 16) and tr["target/pair_idx"].shape == (8, 40, 8)
    assert tr["target/pair"].dtype == records.np_dtype("bfloat16") and tr["target/single"].dtype == np.float32
    _, manifest = records.read_manifest(out)
    assert manifest["lengths"]["train"] == tr["length"].tolist()
    assert tr["target/structure"].shape == (8, 40, 16)
    # the stored targets are the teacher run on the native chain
    from reed_jax.protein import teacher
    m, p = teacher.load(c.protein.teacher_path)
    outs = teacher.make_fn(m, p)(tr["coords"][:2], tr["mask"][:2], tr["residue_idx"][:2], tr["tokens"][:2])
    np.testing.assert_allclose(tr["target/single"][:2], outs["single"], atol=1e-5)
    n0 = int(tr["length"][0])
    assert np.all(tr["mask"][0, n0:] == 0) and np.all(tr["tokens"][0, n0:] == residues.X)
    c.data.dir = out
    logs = []
    res = train.train_and_evaluate(c, str(tmp_path / "run"), log=logs.append)
    assert any(m.startswith("length buckets [32, 40]") for m in logs), logs
    assert res["step"] == 4 and 1.0 < res["perplexity"] < 1e3 and 0.0 <= res["recovery"] <= 1.0
    assert res["chains"] == 2 and 0.0 <= res["diversity"] <= 1.0
    fasta = modes.sample_mode(c, str(tmp_path / "run"), log=lambda *_: None)
    text = open(fasta).read().split("\n")
    assert text[0].startswith(">index_") and text[0].endswith("native") and len(text[1]) == int(va["length"][0])
    assert "recovery=" in text[2] and len(text[3]) == len(text[1]) and set(text[3]) <= set(residues.ALPHABET)
    ev = modes.evaluate_mode(c, str(tmp_path / "run"), log=lambda *_: None)
    assert ev["perplexity"] == pytest.approx(res["perplexity"], rel=1e-5)  # same EMA params, same masks
    # rerun: the shards are kept; a config asking for other widths is refused by name
    precompute.precompute(c, str(tmp_path), logs.append)
    assert any("keeping them" in m for m in logs)
    bad = tiny_protein_config(archive)
    bad.targets.pair.dim = 32
    with pytest.raises(records.DataError, match="teacher's features are 16-d"):
        precompute.precompute(bad, str(tmp_path / "other"))


def test_config_errors_name_keys(archive):
    c = tiny_protein_config(archive)
    c.targets.pair.tap = "decoder9_nodes"
    with pytest.raises(config_lib.ConfigError, match="targets.pair.tap='decoder9_nodes'"):
        config_lib.validate(c)
    c = tiny_protein_config(archive)
    c.data.source = "digits"
    with pytest.raises(config_lib.ConfigError, match="track='protein' with data.source='digits'"):
        config_lib.validate(c)
    for key, bad in (("sample_steps", 1), ("num_classes", 23), ("loss_tokens", 0.0)):
        c = tiny_protein_config(archive)
        c.protein[key] = bad
        with pytest.raises(config_lib.ConfigError, match=f"{key}={bad}"):
            config_lib.validate(c)
    c = tiny_protein_config(archive)
    c.protein.archive = "/nope.tar.gz"
    with pytest.raises(records.DataError, match="protein.archive='/nope.tar.gz' does not exist"):
        precompute.precompute(c, "/tmp/unused")


def test_imported_alphafold_style_embeddings(archive, tmp_path):
    """External targets: one embeddings.npz per chain (single [N, D] and pair [N, N, D]); pairs are
    stored at the native structure's kNN edges; lengths and widths checked by name."""
    c = tiny_protein_config(archive, "base")
    c.targets.single = config_lib.target_template()
    c.targets.single.update(encoder="external", source=str(tmp_path / "emb"), tap="decoder2_nodes", dim=5)
    c.targets.pair = config_lib.target_template()
    c.targets.pair.update(encoder="external", source=str(tmp_path / "emb"), tap="decoder_edges", dim=3)
    config_lib.validate(c)
    splits = data.load_splits(c.protein, log=lambda *_: None)
    os.makedirs(tmp_path / "emb")
    rng = np.random.default_rng(0)
    want = {}
    for i, ch in enumerate(splits["train"] + splits["validation"]):
        n = len(ch)
        want[ch.name] = (rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, n, 3)).astype(np.float32))
        if i % 2:  # both layouts: <chain>.npz and AlphaFold3-style <chain>/embeddings.npz
            np.savez(tmp_path / "emb" / f"{ch.name}.npz", single=want[ch.name][0], pair=want[ch.name][1])
        else:
            os.makedirs(tmp_path / "emb" / ch.name)
            np.savez(tmp_path / "emb" / ch.name / "embeddings.npz", single=want[ch.name][0], pair=want[ch.name][1],
                     structure=np.zeros((n, 7), np.float32))
    out = precompute.precompute(c, str(tmp_path / "w"), log=lambda *_: None)
    d = pipeline.read_all(out, "train")
    names = [ch.name for ch in splits["train"]]
    for j, name in enumerate(names):
        s, p = want[name]
        n = len(s)
        np.testing.assert_array_equal(d["target/single"][j, :n], s)
        idx = d["target/pair_idx"][j, :n]
        real = idx < n  # chains shorter than the 48 stored edges also list padding (masked in the loss)
        got = np.take_along_axis(p, np.minimum(idx, n - 1)[..., None], axis=1)
        np.testing.assert_array_equal(d["target/pair"][j, :n][real], got[real])
        assert np.all(idx[:, 0] == np.arange(n))  # the nearest neighbour of a residue is itself
    ch = splits["train"][1]
    np.savez(tmp_path / "emb" / f"{ch.name}.npz", single=want[ch.name][0][:-1], pair=want[ch.name][1])
    with pytest.raises(records.DataError, match=rf"single has shape \({len(ch) - 1}, 5\); chain {ch.name} has {len(ch)}"):
        data.import_external("single", c.targets.single, ch, 40, None)


def test_proteinmpnn_pdb2021_layout_without_torch():
    """pdb_2021aug02 (torch.save chain files, fixture made with torch by tools/make_parity_fixtures.py
    pdb2021): one chain per cluster, valid clusters held out, test clusters left out."""
    root = os.path.join(FIX, "pdb2021_tiny")
    s = data.read_pdb2021(root)
    assert [c.name for c in s["train"]] == ["1abc_A"] and [c.name for c in s["validation"]] == ["2xyz_A"]
    ch = s["train"][0]
    with open(os.path.join(root, "list.csv")) as fh:
        seq = fh.read().splitlines()[1].split(",")[-1]
    assert ch.sequence == seq and ch.resolution == 2.0 and ch.coords.shape == (24, 4, 3)
    assert ch.backbone_mask.sum() == 23 and not ch.backbone_mask[3]  # residue 3 has no O
    np.testing.assert_allclose(ch.coords[0, 1], [2.3, 0.0, 0.0], atol=1e-6)
    c = tiny_protein_config("unused", "base")
    c.protein.update(source="pdb2021", pdb2021_dir=root, min_length=20)
    config_lib.validate(c)
    assert [len(v) for v in data.load_splits(c.protein, log=lambda *_: None).values()] == [1, 1]
    c.protein.pdb2021_dir = FIX
    with pytest.raises(records.DataError, match="has no list.csv"):
        data.load_splits(c.protein)


def test_trainer_resume_with_length_buckets_is_exact(archive, tmp_path, monkeypatch):
    """4 steps in one go == 2 steps, a restart from the checkpoint (length-bucket iterator state
    included), 2 more: the same per-step losses and batch shapes, the same final params, EMA and
    optimizer state, bit for bit. (The step is compiled once and shared by the three runs, and the
    periodic evaluation stubbed: what is under test is the resumed state and data position.)"""
    from reed_jax import checkpoint

    c = tiny_protein_config(archive, "base")
    c.protein.length_buckets = (32, 40)
    c.optim.ema_decay = 0.5
    c.train.update(log_every=1, eval_every=100, checkpoint_every=2)
    c.data.dir = precompute.precompute(c, str(tmp_path), lambda *_: None)
    seen, compiled = [], []
    orig = train.make_train_step

    def recording(*a, **k):
        if not compiled:
            compiled.append(orig(*a, **k))

        def step(state, batch):
            state, m = compiled[0](state, batch)
            seen.append((int(state.step), float(m["loss/total"]), int(np.asarray(batch["mask"]).shape[1])))
            return state, m
        return step
    monkeypatch.setattr(train, "make_train_step", recording)
    from reed_jax import tracks
    from reed_jax.protein import track as protein_track
    monkeypatch.setattr(protein_track, "evaluations", lambda config, workdir, data_dir, model, mesh, log=print: [
        tracks.Evaluation("eval", config.train.eval_every, lambda params, step: ({"step": step}, None))])
    train.train_and_evaluate(c, str(tmp_path / "once"), log=lambda *_: None)
    once, seen[:] = list(seen), []
    c.train.steps = 2
    train.train_and_evaluate(c, str(tmp_path / "twice"), log=lambda *_: None)
    c.train.steps = 4
    logs = []
    train.train_and_evaluate(c, str(tmp_path / "twice"), log=logs.append)
    assert any("resumed" in m and "step 2" in m for m in logs), logs
    assert [s for s, _, _ in seen] == [1, 2, 3, 4] and len({w for _, _, w in once}) == 2  # both buckets used
    assert seen == once

    def final(workdir):
        model, tx = train.build_model(c), train.make_optimizer(c)
        state, _ = checkpoint.restore(checkpoint.manager(workdir), train.abstract_state(c, model, tx))
        return state
    a, b = final(str(tmp_path / "once")), final(str(tmp_path / "twice"))
    assert int(a.step) == int(b.step) == 4
    for x, y in zip(jax.tree.leaves((a.params, a.ema_params, a.opt_state)), jax.tree.leaves((b.params, b.ema_params,
                                                                                              b.opt_state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
