"""The molecule track's config: the `molecule` block, its validation, and the presets
(`molecule_config`: 3D molecule generation on QM9, demo or reference size, EGNN or Semla)."""
from __future__ import annotations

import ml_collections

from reed_jax import config as config_lib, targets
from reed_jax.config import one_of

SOURCES = ("molecules",)
MOLECULE_SOURCES = ("qm9", "edm_arrays", "sdf")
MOLECULE_BACKBONES = ("egnn", "semla")


def extend_schema(c: ml_collections.ConfigDict) -> None:
    """The molecule block, added to the schema `c`."""
    c.molecule = dict(
        source="qm9",          # one of MOLECULE_SOURCES
        qm9_wheel="",          # source=qm9: the qm9pack wheel (`make data` fetches it)
        edm_path="",           # source=edm_arrays: GEOM as EDM's [M, 5] (id, Z, x, y, z) .npy
        sdf_path="",           # source=sdf: an .sdf file or a folder of them (3D, hydrogens)
        elements="qm9",        # atom vocabulary: 'qm9' (H C N O F) or 'drugs' (16 elements of GEOM-Drugs)
        max_atoms=29,          # molecules padded to this many atoms (QM9 with hydrogens: 29)
        size_buckets=(),       # e.g. (40, 80, 181) for GEOM-Drugs: training batches cropped to the smallest
                               # bucket holding them (one compile each); () = every batch at max_atoms
        split_seed=0, validation_fraction=0.1,  # QM9: standard split sizes; others: this fraction held out
        train_limit=0, eval_limit=0,  # first molecules of each split (0 = all)
        backbone="egnn",       # one of MOLECULE_BACKBONES: 'egnn' (small, robust) or 'semla' (SemlaFlow's attention)
        layers=6, edge_dim=32,  # backbone depth and edge-feature width (width is model.hidden)
        coord_sets=64, heads=32, message_dim=128, message_hidden=128, size_emb=64,  # backbone='semla' only:
                               # coordinate sets, attention heads, pair-message width and MLP width, size embedding
        coord_scale=0.0,       # coordinates divided by this on the flow's data side; 0 = the dataset's std
                               # (SemlaFlow scriptutil.py: QM9 1.7233, GEOM-Drugs 2.4070; molecule.elements)
        coord_noise=0.2,       # std of the Gaussian added to interpolated coordinates (not centred, as SemlaFlow)
        symmetric_bond_noise=False,  # False (SemlaFlow): every ordered atom pair and the diagonal noised
                               # independently; True: one draw per unordered pair (a symmetric noisy graph)
        time_beta=(2.0, 1.0),  # t ~ Beta(a, b), t = 1 data
        ot=True,               # equivariant OT pairing (Hungarian permutation + Kabsch) of noise and data
        self_condition=False,  # feed half the training molecules (and every sampling step) the previous prediction
        loss_coords=1.0, loss_types=0.2, loss_bonds=1.0, loss_charges=1.0,
        sample_steps=100,      # Euler steps on a log time grid from 0 to sample_end
        sample_end=0.99,       # the grid's last time (SemlaFlow's 'log' grid ends at 0.99)
        sample_noise=1.0,      # stochasticity of the categorical sampling steps (SemlaFlow's cat_sampling_noise_level)
        eval_samples=256,      # molecules generated per evaluation
        energy_samples=32,     # ... of which this many valid ones get MMFF energy and strain
        encoder_steps=2000, encoder_seed=1,  # the stand-in QM9 property encoder (targets encoder='qm9_property'):
        encoder_hidden=32, encoder_layers=3, encoder_batch=32,  # fitting steps, seed, width, depth, batch
        ani_wheel="",          # targets encoder='ani1x': the torchani 2.2.4 wheel (`make data`) or its ani-1x_8x folder
        ani_layer=3,           # ... the ANI-1x hidden layer pooled as the target (1..3: 160 / 128 / 96 features)
        ani_member=0,          # ... the ensemble member (0..7) whose activations are the target (members' units differ)
        ani_standardize=True,  # ... features standardised per channel with the training split's mean and std
        ani_pool="mean",       # ... pooled over atoms: 'mean' (one mean, W features) or 'element' (one mean per
                               # element H/C/N/O, concatenated: 4 W features; ANI's networks are per element)
    )


def validate(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raise ConfigError naming the first molecule key (or target key) that cannot run."""
    from reed_jax.models import encoders

    for name, t in c.targets.items():
        one_of(t.tap, tuple(f"layer{i}" for i in range(1, c.molecule.layers + 1)), f"targets.{name}.tap")
        if t.projector != "mlp" or t.spatial_norm:
            raise config_lib.ConfigError(f"targets.{name}: projector={t.projector!r}, spatial_norm={t.spatial_norm} are "
                                         f"iREPA's image-grid switches; the molecule track takes projector='mlp', "
                                         f"spatial_norm=False")
        one_of(t.encoder, (encoders.MOLECULE_STANDIN, encoders.MOLECULE_ANI, encoders.EXTERNAL),
               f"targets.{name}.encoder")
        if not t.pooled:
            raise config_lib.ConfigError(f"targets.{name}.pooled=False: molecule targets are one vector per molecule, "
                                         f"aligned with the atom features summed over real atoms; set pooled=True")
    m = c.molecule
    one_of(m.source, MOLECULE_SOURCES, "molecule.source")
    if m.ani_layer not in (1, 2, 3) or not 0 <= m.ani_member <= 7:
        raise config_lib.ConfigError(f"molecule.ani_layer={m.ani_layer} (1..3), ani_member={m.ani_member} (0..7): out "
                                     f"of range")
    one_of(m.ani_pool, ("mean", "element"), "molecule.ani_pool")  # ani.POOLS (not imported: ani loads jax)
    one_of(m.elements, ("qm9", "drugs"), "molecule.elements")
    one_of(m.backbone, MOLECULE_BACKBONES, "molecule.backbone")
    if m.backbone == "semla" and (c.model.hidden % m.heads or min(m.coord_sets, m.heads, m.message_dim,
                                                                    m.message_hidden, m.size_emb) < 1):
        raise config_lib.ConfigError(f"molecule.heads={m.heads} must divide model.hidden={c.model.hidden}, and "
                          f"molecule.coord_sets={m.coord_sets}, message_dim={m.message_dim}, message_hidden="
                          f"{m.message_hidden}, size_emb={m.size_emb} must be >= 1 (backbone='semla')")
    if m.max_atoms < 2 or m.layers < 1 or m.sample_steps < 1:
        raise config_lib.ConfigError(f"molecule.max_atoms={m.max_atoms}, layers={m.layers}, sample_steps={m.sample_steps}: "
                          f"need max_atoms >= 2, layers >= 1, sample_steps >= 1")
    sb = tuple(m.size_buckets)
    if sb and (list(sb) != sorted(set(sb)) or sb[-1] != m.max_atoms or sb[0] < 2):
        raise config_lib.ConfigError(f"molecule.size_buckets={sb}: need strictly increasing sizes >= 2, the last equal to "
                          f"molecule.max_atoms={m.max_atoms}")
    if not (0.0 < m.sample_end < 1.0 and m.sample_noise >= 0.0 and m.coord_scale >= 0.0):
        raise config_lib.ConfigError(f"molecule.sample_end={m.sample_end}, sample_noise={m.sample_noise}, coord_scale="
                          f"{m.coord_scale}: need 0 < sample_end < 1, sample_noise >= 0, coord_scale >= 0")
    if len(m.time_beta) != 2 or min(m.time_beta) <= 0:
        raise config_lib.ConfigError(f"molecule.time_beta={tuple(m.time_beta)}: the (a, b) of Beta(a, b), both > 0")


MOLECULE_SIZES = {  # (lr, ema_decay, steps, batch, train_limit, eval_limit, encoder_steps, default backbone)
    "demo": (1e-3, 0.99, 1200, 32, 3000, 300, 600, "egnn"),          # ~12 min on a 2-core CPU
    "reference": (3e-4, 0.999, 300_000, 128, 0, 0, 20_000, "semla"),  # full QM9 on an accelerator
}
MOLECULE_WIDTHS = {  # (backbone, size) -> model.hidden, molecule.layers, edge_dim (+ the semla widths)
    ("egnn", "demo"): dict(hidden=64, layers=6, edge_dim=32),
    ("egnn", "reference"): dict(hidden=256, layers=9, edge_dim=32),
    ("semla", "demo"): dict(hidden=64, layers=4, edge_dim=32, coord_sets=16, heads=8, message_dim=32,
                            message_hidden=32, size_emb=16),
    ("semla", "reference"): dict(hidden=384, layers=12, edge_dim=128, coord_sets=64, heads=32, message_dim=128,
                                 message_hidden=128, size_emb=64),  # METHOD.md section 4 (SemlaFlow's QM9 model)
}


def molecule_config(variant: str = "reed", size: str = "demo", root: str = ".data",
                    backbone: str = "") -> ml_collections.ConfigDict:
    """Unconditional 3D molecule generation by flow matching (METHOD.md section 4) on QM9.

    Coordinates, atom types, charges and bonds; Beta(2, 1) times; OT-paired noise. backbone:
    'egnn' or 'semla' (SemlaFlow's equivariant attention; '' = the size's default: EGNN for the
    demo, Semla 384 x 12 for the reference). reed: one target, the pooled vector of the frozen
    stand-in 3D encoder (`qm9_property`: an EGNN fitted once on QM9's DFT properties, 128-d),
    aligned from layer 4's (reference size: layer 5's, the reference's 0-based --align_depth 4) atom
    features summed over real atoms through an MLP (hidden -> hidden ->
    hidden -> 128); w_align = 0.2 constant, w_gen warmed up linearly over the first 15% of
    training (the reference: 30 of 200 epochs). base: no target. size: 'demo' (width 64, 3,000
    training molecules) or 'reference' (all of QM9's 100k training molecules, self-conditioning).
    """
    if variant not in ("reed", "base"):
        raise config_lib.ConfigError(f"molecule config: unknown variant {variant!r}; expected reed or base")
    if size not in MOLECULE_SIZES:
        raise config_lib.ConfigError(f"molecule config: unknown size {size!r}; expected one of {list(MOLECULE_SIZES)}")
    lr, ema, steps, batch, n_train, n_eval, enc_steps, default_backbone = MOLECULE_SIZES[size]
    backbone = backbone or default_backbone
    if backbone not in MOLECULE_BACKBONES:
        raise config_lib.ConfigError(f"molecule config: unknown backbone {backbone!r}; expected one of {MOLECULE_BACKBONES}")
    widths = dict(MOLECULE_WIDTHS[backbone, size])
    hidden, layers = widths.pop("hidden"), widths["layers"]
    c = config_lib.base_config()
    c.track = "molecule"
    c.data.update(source="molecules", num_shards=2)
    c.model.update(name=f"{backbone.upper()}-{hidden}x{layers}", hidden=hidden, projector_width=hidden)
    c.molecule.update(ani_wheel=f"{root}/torchani-2.2.4-py3-none-any.whl")  # for targets encoder='ani1x'
    c.molecule.update(qm9_wheel=f"{root}/qm9pack-1.0.3-py3-none-any.whl", backbone=backbone, train_limit=n_train,
                      eval_limit=n_eval, encoder_steps=enc_steps, **widths,
                      size_buckets=(16, 20, 24, 29))  # QM9: 2.42x (EGNN) / 1.83x (Semla) less step time (docs/molecules.md)
    c.optim.update(lr=lr, weight_decay=0.0, grad_clip=1.0, ema_decay=ema, amsgrad=True,
                   warmup_steps=min(10_000, steps // 10),  # METHOD.md: Adam (amsgrad), 10K-step warm-up
                   warmup_init=1e-2)  # from 1e-2 x lr (SemlaFlow: LinearLR(start_factor=1e-2))
    c.train.update(batch_size=batch, steps=steps, log_every=min(100, steps // 10), eval_every=steps // 3,
                   checkpoint_every=steps // 3)
    c.sample.batch_size = 64
    if size == "reference":
        c.molecule.self_condition = True  # SemlaFlow trains with self-conditioning
    if size == "demo":  # CPU-sized evaluation: 128 molecules, 50 sampling steps
        c.molecule.update(eval_samples=128, sample_steps=50, energy_samples=16)
    if variant == "reed":
        tap = "layer5" if size == "reference" else "layer4"  # the reference's --align_depth 4 is 0-based
        c.targets.qm9_property = targets.make(tap=tap, pooled=True, dim=128, coeff=1.0, proj_width=hidden,
                                         encoder="qm9_property")  # models.encoders.MOLECULE_STANDIN
        c.curriculum.update(gen=dict(start=0, warmup=int(0.15 * steps), decay="constant", total_steps=0),
                            align=dict(coeff=0.2, decay="constant", decay_steps=0))
    return c
