"""Write docs/configs.md: every key of `reed_jax.config.base_config()` and of the target template.

    .venv/bin/python tools/config_reference.py            # rewrite docs/configs.md
    .venv/bin/python tools/config_reference.py --check    # exit 1 if the file is stale or a key has no text

The keys and defaults come from the live schema (`base_config()` imported, so a schema assembled from
per-track modules is read as the trainer sees it). Each key's text is the comment written beside it
where the schema defines it: every module under `reed_jax/` is parsed (`ast` for the `dict(...)` /
`{...}` / `c.a.b = ...` that name keys, `tokenize` for the comments on those lines and their
continuation lines), and each block of the schema takes its comments from the definition whose keys
match it best (the dotted path when the code spells it, e.g. `c.data = dict(...)`, else the overlap
of key names). Keys the code leaves uncommented take their text from `NOTES` below; a key with
neither is reported, and tests/core/test_docs.py fails until it is documented.
"""
from __future__ import annotations

import argparse
import ast
import io
import os
import sys
import tokenize
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "configs.md")
TARGET_BLOCK = "targets.<name>"
SCHEMA_FUNCTIONS = ("base_config", "schema", "template")  # functions whose names mark a schema definition

# Text for keys the schema's source leaves without a comment (inline comments win when both exist).
NOTES = {
    "seed": "seed of parameter init, data order, noise and sampling",
    "targets": "dict of alignment targets keyed by name (each shaped like the target template below); "
               "the name is also the shard field `target/<name>`",
    "data.latent_scale": "latents: the VAE scale the stored moments are multiplied by (SD-VAE: 0.18215)",
    "data.num_classes": "labels; the null class of classifier-free guidance is `num_classes`",
    "data.num_shards": "shards written by `--mode=precompute`",
    "data.tfds_split": "image_source='tfds': the split read",
    "model.name": "a label for logs and the checkpoint meta (`sit_model('XL/2')` sets it)",
    "model.depth": "transformer blocks (image track; the protein/molecule backbones use their own blocks)",
    "model.hidden": "residual width (every track)",
    "model.heads": "attention heads (image track)",
    "model.patch_size": "patch side in pixels / latent cells (image track)",
    "model.mlp_ratio": "MLP width / hidden (image track)",
    "model.label_dropout": "probability a training label is replaced by the null class (classifier-free guidance)",
    "model.projector_width": "hidden width of the alignment projectors (a target's `proj_width` overrides it)",
    "mesh.data": "device-mesh size of the data axis (-1 = the rest of the devices)",
    "mesh.fsdp": "device-mesh size of the fsdp axis: > 1 shards params, EMA and optimizer state",
    "diffusion.path": "interpolant: `linear` (x_t = (1-t) x0 + t eps) or `cosine` (GVP)",
    "diffusion.time_sampler": "t ~ `uniform` or `lognormal` (per sample)",
    "curriculum.gen.start": "w_gen is 0 before this step",
    "curriculum.gen.warmup": "then ramps linearly to 1 over this many steps (REED: 50K on ImageNet)",
    "curriculum.gen.decay": "after the warm-up: one of curriculum.DECAYS (`constant`, ...)",
    "curriculum.gen.total_steps": "end of the decay (needed when decay != constant)",
    "curriculum.align.coeff": "w_align's value (REPA/REED images 0.5; proteins/molecules 0.2)",
    "curriculum.align.decay": "w_align's decay: one of curriculum.DECAYS (proteins: cosine)",
    "curriculum.align.decay_steps": "length of w_align's decay (needed when decay != constant)",
    "optim.lr": "peak learning rate (AdamW; AMSGrad with optim.amsgrad)",
    "optim.b1": "Adam beta1",
    "optim.b2": "Adam beta2",
    "optim.eps": "Adam epsilon",
    "optim.weight_decay": "decoupled weight decay",
    "optim.grad_clip": "global-norm gradient clipping bound (inf = none)",
    "optim.ema_decay": "EMA of the parameters that sampling and evaluation read (0 = the raw parameters)",
    "train.batch_size": "global batch (every process count reads the same global batches)",
    "train.steps": "optimizer steps",
    "train.log_every": "steps between log lines / TensorBoard scalars (and the async-save check)",
    "train.eval_every": "steps between evaluations (digits-FD, perplexity, stability ...; results.json)",
    "train.checkpoint_every": "steps between checkpoints",
    "train.keep_checkpoints": "newest checkpoints kept",
    "train.max_consecutive_skips": "non-finite steps in a row after which the run stops",
    "sample.method": "`sde` (Euler-Maruyama), `euler` or `heun` (ODE)",
    "sample.num_steps": "sampler steps",
    "sample.cfg_scale": "classifier-free guidance scale (1 = none)",
    "sample.guidance_lo": "guidance interval start (t in [lo, hi] is guided)",
    "sample.guidance_hi": "guidance interval end",
    "sample.batch_size": "sampling batch (a multiple of the device count)",
    "sample.grid_per_class": "samples per class row in the grids",
    "eval.inception_batch_size": "Inception forward batch",
    "precompute.encoder_steps": "digits: steps fitting the frozen CNN encoder",
    "precompute.encoder_seed": "digits: its seed",
    "precompute.fd_steps": "digits: steps fitting the digits-FD metric network",
    "precompute.fd_seed": "digits: its seed (different from the encoder's)",
    "precompute.vae_groups": "SD-VAE group-norm groups",
    "precompute.vae_path": "source='imagenet': the SD-VAE weights that encode the images to moments (diffusers names; "
                           "the protocol's sd-vae-ft-mse)",
    "precompute.dinov2_size": "DINOv2 input size (images resized PyTorch-exact bicubic to it)",
    "precompute.batch_size": "encoder batch of the image precompute",
    "protein.min_length": "chains shorter than this are skipped",
    "protein.max_length": "chains longer than this are skipped; batches are padded to it (or cropped to a bucket)",
    "protein.teacher_model": "which ProteinMPNN inside the colabdesign wheel",
    "protein.k": "kNN neighbours on C-alpha (reference 30)",
    "protein.enc_layers": "encoder layers",
    "protein.dec_layers": "decoder layers",
    "protein.dropout": "dropout",
    "protein.backbone_noise": "Gaussian noise on backbone coordinates in training (Angstrom)",
    "protein.t_min": "t ~ U[t_min, t_max]; t = clean fraction",
    "protein.t_max": "see t_min",
    "protein.label_smoothing": "label smoothing of the CE (over all classes)",
    "protein.temperature": "sampling temperature",
    "protein.sample_allow_x": "X (unknown residue) may be sampled (the reference)",
    "protein.split_seed": "seed of the held-out split",
    "protein.validation_fraction": "held-out fraction when the source has no split",
    "molecule.split_seed": "seed of the split permutation",
    "molecule.validation_fraction": "held-out fraction for sources without standard splits",
    "molecule.train_limit": "first molecules of the training split (0 = all)",
    "molecule.eval_limit": "first molecules of the held-out split (0 = all)",
    "molecule.layers": "backbone layers",
    "molecule.edge_dim": "edge-feature width",
    "molecule.loss_coords": "weight of the coordinate MSE",
    "molecule.loss_types": "weight of the atom-type CE (SemlaFlow 0.2)",
    "molecule.loss_bonds": "weight of the bond CE",
    "molecule.loss_charges": "weight of the formal-charge CE",
    "molecule.encoder_steps": "fitting steps of the stand-in QM9 property encoder (targets encoder='qm9_property')",
    "molecule.encoder_seed": "its seed",
    "molecule.encoder_hidden": "stand-in encoder width",
    "molecule.encoder_layers": "stand-in encoder depth",
    "molecule.encoder_batch": "stand-in encoder batch",
}

# What each block is for (the section text of docs/configs.md).
BLOCKS = {
    "": "Top level.",
    "data": "Where the shards are and what they hold.",
    "encoder": "How image targets are produced.",
    "model": "The backbone (SiT for images; width and projector width for every track).",
    "mesh": "The device mesh (docs/scaling.md).",
    "diffusion": "The image track's interpolant and time sampling.",
    "curriculum.gen": "w_gen(step): the generative loss weight.",
    "curriculum.align": "w_align(step): the alignment weight.",
    "optim": "Optimizer (AdamW, or AMSGrad for the molecule track).",
    "train": "The loop.",
    "sample": "Sampling (image track: docs/images.md#samplers).",
    "eval": "Evaluation (docs/evaluation.md).",
    "precompute": "Frozen encoders and shards (`--mode=precompute`).",
    "protein": "The protein track (docs/proteins.md).",
    "molecule": "The molecule track (docs/molecules.md).",
    TARGET_BLOCK: "One alignment target; `config.targets` holds any number of them by name.",
}


@dataclass
class Group:
    """Keys one piece of source names together (a dict(...) / {...} / attribute assignment)."""
    prefix: str | None          # dotted block path when the code spells it ("data", "curriculum.gen"), else None
    definition: bool            # a definition (dict / ConfigDict / assignment), not an `.update(...)`
    keys: dict[str, str] = field(default_factory=dict)   # key -> its comment ('' = none)
    lines: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (source line, column)
    shared: set[str] = field(default_factory=set)        # keys whose comment line names other keys too
    where: str = ""
    in_schema: bool = False     # inside a function that builds the schema (base_config, schema, template)


def _comments(src: str) -> tuple[dict[int, tuple[int, str]], set[int], dict[int, int]]:
    """Comments by line {line: (col, text)}, the lines holding code, and each code line's indent."""
    comments, code, indent = {}, set(), {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            for line in range(tok.start[0], tok.end[0] + 1):
                code.add(line)
                indent.setdefault(line, tok.start[1] if line == tok.start[0] else 0)
    return comments, code, indent


def _comment_at(line: int, comments, code, indent) -> str:
    """The trailing comment of a code line plus the comment-only lines continuing it (indented deeper)."""
    if line not in comments or line not in code:
        return ""
    parts = [comments[line][1]]
    nxt = line + 1
    while nxt in comments and nxt not in code and comments[nxt][0] > indent.get(line, 0):
        parts.append(comments[nxt][1])
        nxt += 1
    return " ".join(p for p in parts if p)


def _dotted(node: ast.AST) -> list[str] | None:
    """`c.data.source` -> ['c', 'data', 'source']; None for anything else."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + names[::-1]
    return None


def _is_dict_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    return name in ("dict", "ConfigDict", "FrozenConfigDict")


def _groups_in(path: str) -> list[Group]:
    """Every group of keys a module names, with their comments."""
    src = open(path, encoding="utf-8").read()
    try:
        tree = ast.parse(src)
        comments, code, indent = _comments(src)
    except (SyntaxError, tokenize.TokenError):
        return []
    rel = os.path.relpath(path, ROOT)
    groups: list[Group] = []
    seen: set[int] = set()
    enclosing: dict[int, str] = {}  # node -> the innermost function around it (ast.walk is outer-first)
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(fn):
                enclosing[id(inner)] = fn.name

    def _append(g: Group, node: ast.AST) -> None:
        g.in_schema = any(w in enclosing.get(id(node), "") for w in SCHEMA_FUNCTIONS)
        groups.append(g)

    def add(node: ast.AST, prefix: str | None, definition: bool) -> None:
        if id(node) in seen:
            return
        if _is_dict_call(node) and node.args and not node.keywords:
            add(node.args[0], prefix, definition)  # ConfigDict(dict(...)) / ConfigDict({...})
            return
        pairs = []
        if _is_dict_call(node):
            pairs = [(kw.arg, kw.lineno, kw.col_offset, kw.value) for kw in node.keywords if kw.arg]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, k.lineno, k.col_offset, v) for k, v in zip(node.keys, node.values)
                     if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        if not pairs:
            return
        seen.add(id(node))
        g = Group(prefix, definition, where=f"{rel}:{node.lineno}")
        per_line: dict[int, int] = {}
        for _, line, _, _ in pairs:
            per_line[line] = per_line.get(line, 0) + 1
        for key, line, col, value in pairs:
            g.keys[key] = _comment_at(line, comments, code, indent)
            g.lines[key] = (line, col)
            if per_line[line] > 1:
                g.shared.add(key)
            if _is_dict_call(value) or isinstance(value, ast.Dict):
                add(value, None if prefix is None else (f"{prefix}.{key}" if prefix else key), definition)
        _append(g, node)

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names = _dotted(t)
                if not names or len(names) < 2:
                    continue
                path_ = ".".join(names[1:])  # drop the root variable (`c.data` -> 'data')
                if node.value is not None and (_is_dict_call(node.value) or isinstance(node.value, ast.Dict)):
                    add(node.value, path_, True)
                else:
                    block, _, key = path_.rpartition(".")
                    g = Group(block, True, where=f"{rel}:{node.lineno}")
                    g.keys[key] = _comment_at(node.lineno, comments, code, indent)
                    g.lines[key] = (node.lineno, node.col_offset)
                    _append(g, node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
              and len(node.args) == 1 and (_is_dict_call(node.args[0]) or isinstance(node.args[0], ast.Dict))):
            names = _dotted(node.func.value)  # c.data.update(dict(...)) / c.data.update({...})
            add(node.args[0], ".".join(names[1:]) if names and len(names) > 1 else None, False)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
              and node.keywords):
            names = _dotted(node.func.value)
            g = Group(".".join(names[1:]) if names and len(names) > 1 else None, False,
                      where=f"{rel}:{node.lineno}")
            named = [kw for kw in node.keywords if kw.arg]
            for kw in named:
                g.keys[kw.arg] = _comment_at(kw.lineno, comments, code, indent)
                g.lines[kw.arg] = (kw.lineno, kw.col_offset)
                if sum(o.lineno == kw.lineno for o in named) > 1:
                    g.shared.add(kw.arg)
            _append(g, node)
    for node in ast.walk(tree):  # dicts not under an assignment (`return ConfigDict(dict(...))`)
        if _is_dict_call(node) or isinstance(node, ast.Dict):
            add(node, None, True)
    return groups


def source_groups(package: str = os.path.join(ROOT, "reed_jax")) -> list[Group]:
    """Groups of every module of the package (sorted paths: the result does not depend on the file system)."""
    out = []
    for base, dirs, files in os.walk(package):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                out.extend(_groups_in(os.path.join(base, f)))
    return out


def leaves(cfg, prefix: str = "") -> dict[str, object]:
    """Dotted key -> default of every leaf of a ConfigDict (an empty block such as `targets` is a leaf)."""
    import ml_collections

    out = {}
    for k in cfg.keys():
        v = cfg[k]
        if isinstance(v, ml_collections.ConfigDict) and v.keys():
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v
    return out


def schema():
    """(base_config leaves, target-template leaves) from the live package."""
    sys.path.insert(0, ROOT)
    from reed_jax import config as cfg_mod

    template = getattr(cfg_mod, "target_template", None)
    if template is None:  # after a move, wherever the package keeps it
        import importlib
        import pkgutil

        import reed_jax
        for mod in pkgutil.walk_packages(reed_jax.__path__, "reed_jax."):
            try:
                template = getattr(importlib.import_module(mod.name), "target_template", None)
            except Exception:  # noqa: BLE001 - a module that does not import has no template
                continue
            if template is not None:
                break
    if template is None:
        raise SystemExit("config_reference: no target_template() found in reed_jax")
    home = os.path.relpath(sys.modules[cfg_mod.base_config.__module__].__file__, ROOT)
    return leaves(cfg_mod.base_config()), leaves(template()), home


def describe(keys: dict[str, object], groups: list[Group], home: str = "",
             block_of=None) -> dict[str, tuple[str, int]]:
    """Key -> (text, sort key: (not in `home`, file, line, column) of the key's best-ranked definition).

    A key's candidates are the groups naming it that fit its block: first those spelling the block's
    path (`c.data = dict(...)` for `data.*`), then unnamed dicts sharing at least half their keys with
    the block. They rank by (path spelled, in `home` = the module defining base_config, a definition
    rather than an `.update`, share of the block's keys they name); the text is the best-ranked
    comment, else NOTES; the order is the best-ranked group's source line.
    """
    block_of = block_of or (lambda k: k.rpartition(".")[0])
    blocks: dict[str, set[str]] = {}
    for k in keys:
        blocks.setdefault(block_of(k), set()).add(k.rpartition(".")[2])
    out = {}
    for k in keys:
        block, leaf = block_of(k), k.rpartition(".")[2]
        names = blocks[block]
        ranked = []
        for g in groups:
            if leaf not in g.keys:
                continue
            overlap = len(names & set(g.keys))
            if g.prefix is not None and g.prefix == block:
                level = 2
            elif g.prefix is None and overlap >= max(2, (len(g.keys) + 1) // 2):
                level = 1
            else:
                continue
            ranked.append(((level, g.in_schema, g.where.startswith(home + ":") if home else False, g.definition,
                            overlap / len(names)), g))
        ranked.sort(key=lambda sg: sg[0], reverse=True)
        own = next((g.keys[leaf] for _, g in ranked if g.keys[leaf] and leaf not in g.shared), "")
        shared = next(((g, g.keys[leaf]) for _, g in ranked if g.keys[leaf] and leaf in g.shared), None)
        text = own or NOTES.get(k, "")
        if not text and shared:  # a comment written for several keys on one line: name them
            g, comment = shared
            mates = [m for m in g.keys if g.lines[m][0] == g.lines[leaf][0]]
            text = f"({', '.join(mates)}) {_resolve(comment)}"
        if ranked:  # order: the shared schema's keys first, then each module's in source order
            g = ranked[0][1]
            file = g.where.rpartition(":")[0]
            order = (file != home, file, *g.lines[leaf])
        else:
            order = (True, "~", 10 ** 9, 0)
        out[k] = (_resolve(text), order)
    return out


def _resolve(text: str) -> str:
    """Append the value of each UPPER_CASE constant the text names (`one of DATA_SOURCES`) when the loaded
    reed_jax modules define it as a tuple/list/dict of strings with one value (ambiguous names stay as
    they are)."""
    import re

    for name in dict.fromkeys(re.findall(r"\b([A-Z][A-Z0-9_]{3,})\b", text)):
        values = set()
        for mod_name, mod in list(sys.modules.items()):
            if not mod_name.startswith("reed_jax") or mod is None:
                continue
            v = getattr(mod, name, None)
            if isinstance(v, dict):
                v = list(v)
            if isinstance(v, (tuple, list)) and v and all(isinstance(x, str) for x in v):
                values.add(tuple(v))
        if len(values) == 1:
            text = text.replace(name, f"{name} ({', '.join(values.pop())})", 1)
    return text


def _fmt(v) -> str:
    if isinstance(v, tuple):
        v = list(v)
    s = repr(v).replace("|", "\\|")
    return f"`{s}`"


def _cell(text: str, html: bool = False) -> str:
    """A table cell: '|' escaped; with html, '<' and '>' outside `code` spans too (else they read as tags)."""
    parts = text.replace("|", "\\|").split("`")
    if html:
        parts = [p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts)]
    return "`".join(parts)


def config_files() -> list[tuple[str, str, list[str]]]:
    """(path, first docstring line, command lines) of every configs/**/*.py."""
    out = []
    for base, dirs, files in os.walk(os.path.join(ROOT, "configs")):
        dirs.sort()
        for f in sorted(files):
            if not f.endswith(".py") or f == "__init__.py":
                continue
            p = os.path.join(base, f)
            doc = ast.get_docstring(ast.parse(open(p, encoding="utf-8").read())) or ""
            first = " ".join(doc.split("\n\n")[0].split())
            cmds = [ln.strip() for ln in doc.splitlines() if ln.strip().startswith(("python ", "make "))]
            out.append((os.path.relpath(p, ROOT), first, cmds))
    return out


def render() -> tuple[str, list[str]]:
    """docs/configs.md's text and the keys that have no text."""
    base, template, home = schema()
    groups = source_groups()
    d_base = describe(base, groups, home)
    t_keys = {f"{TARGET_BLOCK}.{k}": v for k, v in template.items()}
    d_tmpl = describe(t_keys, groups, home, block_of=lambda k: TARGET_BLOCK)
    missing = [k for k, (t, _) in {**d_base, **d_tmpl}.items() if not t]

    lines = [
        "# Configs reference",
        "",
        "<!-- Generated by tools/config_reference.py from reed_jax.config.base_config() and the comments",
        "     beside each key in the source; edit the comments (or NOTES in the tool), then rerun it. -->",
        "",
        "Configs are `ml_collections` files under `configs/` whose docstring holds the command that runs",
        "them; each starts from `reed_jax.config.base_config()` (the schema: every key below, with its",
        "default) and overrides values. `validate()` runs before any compute and names the offending key",
        "(`unknown config key 'train.bach_size'`, `train.batch_size=12 must be a positive multiple of the",
        "device count 8`); an unknown `--config.<key>` on the command line prints the same line (exit",
        "status 2). Any value can be overridden on the command line, e.g.",
        "`--config.train.steps=2000 --config.targets.digits_pooled.coeff=0`; a config file may take an",
        "argument after `:` (`--config=configs/demo.py:repa`).",
        "",
        f"{len(base)} keys in `base_config()`, {len(template)} in each target.",
        "",
        "## Contents",
        "",
    ]
    order = list(BLOCKS)
    present = sorted({k.rpartition(".")[0] for k in base}, key=lambda b: (order.index(b) if b in order else 99, b))
    for b in present + [TARGET_BLOCK]:
        lines.append(f"- [`{b or 'top level'}`](#{_anchor(b or 'top level')})")
    lines += ["- [Config files](#config-files)", ""]

    def table(block: str, items: list[tuple[str, object]], desc) -> None:
        lines.extend([f"## {block or 'top level'}", "", BLOCKS.get(block, ""), "",
                      "| key | default | meaning |", "|---|---|---|"])
        for k, v in sorted(items, key=lambda kv: (desc[kv[0]][1], kv[0])):
            lines.append(f"| `{k}` | {_fmt(v)} | {_cell(desc[k][0], html=True)} |")
        lines.append("")

    for b in present:
        table(b, [(k, v) for k, v in base.items() if k.rpartition(".")[0] == b], d_base)
    table(TARGET_BLOCK, list(t_keys.items()), d_tmpl)
    lines += ["## Config files", "", "| file | what it runs | command |", "|---|---|---|"]
    for path, first, cmds in config_files():
        cmd = "<br>".join(f"`{c}`" for c in cmds[:3])
        lines.append(f"| `{path}` | {_cell(first, html=True)} | {_cell(cmd)} |")
    lines.append("")
    return "\n".join(lines), missing


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return "".join(ch for ch in title.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/configs.md differs or a key has no text")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    text, missing = render()
    for k in missing:
        print(f"config_reference: {k} has no comment in the source and no entry in NOTES", file=sys.stderr)
    if args.check:
        current = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else ""
        if current != text:
            print(f"config_reference: {args.out} is stale; run tools/config_reference.py", file=sys.stderr)
            return 1
        return 1 if missing else 0
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(args.out, ROOT)}: {text.count(chr(10))} lines, {len(missing)} keys without text")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
