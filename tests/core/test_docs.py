"""docs/configs.md documents every config key (tools/config_reference.py writes it).

An undocumented new key of `base_config()` or of the target template, a key left without text, or
a documented key that no longer exists fails here; the message says to rerun the generator.
"""
import os

import ml_collections

from reed_jax import config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "configs.md")
TARGET = "targets.<name>."
FIX = "run `.venv/bin/python tools/config_reference.py` (and comment the key where the schema defines it)"


def dotted(cfg, prefix=""):
    """Every leaf key of a ConfigDict, dotted (an empty block such as `targets` is a leaf)."""
    out = []
    for k in cfg.keys():
        v = cfg[k]
        if isinstance(v, ml_collections.ConfigDict) and v.keys():
            out += dotted(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def documented():
    """key -> its text, from the key tables of docs/configs.md (rows `| \\`key\\` | default | text |`)."""
    rows = {}
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if line.startswith("| `") and len(cells) >= 3 and not cells[0].startswith("`configs/"):
                rows[cells[0].strip("`")] = cells[2]
    return rows


def schema_keys():
    return dotted(config.base_config()) + [TARGET + k for k in dotted(config.target_template())]


def test_every_config_key_is_documented_with_text():
    rows = documented()
    keys = schema_keys()
    assert len(keys) > 100  # the schema was read, not an empty dict
    missing = [k for k in keys if k not in rows]
    assert not missing, f"docs/configs.md lacks {missing}: {FIX}"
    empty = [k for k in keys if not rows[k]]
    assert not empty, f"docs/configs.md has no text for {empty}: {FIX}"


def test_no_documented_key_is_stale():
    stale = sorted(set(documented()) - set(schema_keys()))
    assert not stale, f"docs/configs.md documents keys the schema no longer has: {stale}: {FIX}"


def anchor(title):
    """GitHub's anchor of a heading: lower case, spaces to '-', punctuation other than '-' and '_' dropped."""
    return "".join(ch for ch in title.strip().lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def test_links_between_the_pages_resolve():
    """Every relative link of README.md and docs/*.md names an existing file (and heading, after '#')."""
    import glob
    import re

    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    broken = []
    for page in pages:
        text = open(page, encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(dest):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no file)")
            elif frag and dest.endswith(".md"):
                heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", open(dest, encoding="utf-8").read(),
                                                        flags=re.S), flags=re.M)
                if frag not in {anchor(h) for h in heads}:
                    broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no heading)")
    assert len(pages) >= 8
    assert not broken, broken
