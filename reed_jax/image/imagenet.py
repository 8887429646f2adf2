"""ImageNet-style image folders (`<root>/<synset>/*.JPEG`) and ADM's center crop.

Labels are the index of the synset in the sorted synset list; the example index is the position
in the sorted (synset, file name) list, so every process and every rerun sees the same order.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

EXTENSIONS = (".jpeg", ".jpg", ".png")


def list_folder(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels [N] int32, synsets) of `root/<synset>/<image>`; errors name the folder."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    synsets = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not synsets:
        raise FileNotFoundError(f"image folder {root!r} has no class sub-folders (expected <root>/<synset>/*.JPEG)")
    paths, labels = [], []
    for y, s in enumerate(synsets):
        files = sorted(f for f in os.listdir(os.path.join(root, s)) if f.lower().endswith(EXTENSIONS))
        paths += [os.path.join(root, s, f) for f in files]
        labels += [y] * len(files)
    if not paths:
        raise FileNotFoundError(f"image folder {root!r} has class folders but no images ({EXTENSIONS})")
    return paths, np.asarray(labels, np.int32), synsets


def center_crop_adm(image: Image.Image, size: int) -> np.ndarray:
    """ADM's center crop: halve with a box filter while the short side >= 2 * size, bicubic-resize
    the short side to `size`, crop the center. Returns uint8 [size, size, 3]."""
    image = image.convert("RGB")
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def load(path: str, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return center_crop_adm(im, size)
