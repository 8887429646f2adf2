"""Where raw images come from for the ImageNet path: an image folder or a tfds dataset.

A source is indexable: `len(src)`, `src.example(i) -> (ADM crop uint8 [S, S, 3], label)`,
`src.relpaths()` (the `<synset>/<stem>` of every image, to align imported embeddings that
mirror the image tree), `src.num_classes` and `src.info` (recorded in the manifest). The index
`i` is the example's position in a fixed order (sorted folder listing; the tfds split's order)
and is stored with every record. Labels are the sorted synset index in both.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from reed_jax.data import records
from reed_jax.image import imagenet


class FolderSource:
    """`<imagenet_dir>/<synset>/*.JPEG` (see imagenet.list_folder)."""

    def __init__(self, root: str, size: int):
        if not root:
            raise records.DataError("data.imagenet_dir is empty: point it at the train folder (<dir>/<synset>/*.JPEG)")
        self.paths, self.labels, self.synsets = imagenet.list_folder(root)
        self.root, self.size = root, size
        self.num_classes = len(self.synsets)
        self.info = {"source": "imagenet_folder", "root": root, "synsets": self.synsets}

    def __len__(self) -> int:
        return len(self.paths)

    def example(self, i: int) -> tuple[np.ndarray, int]:
        return imagenet.load(self.paths[i], self.size), int(self.labels[i])

    def relpaths(self) -> list[str]:
        return [os.path.splitext(os.path.relpath(p, self.root))[0] for p in self.paths]


class TfdsSource:
    """A tfds image-classification dataset read through `tfds.data_source` (array_record files).

    Not prepared yet and `data.tfds_manual_dir` given: built once from the manual-download
    tarballs (ILSVRC2012_img_train.tar, ...) as array_record. Features `image` (decoded here with
    PIL's ADM crop), `label`, and `file_name` (`n01440764_10026.JPEG` -> `n01440764/n01440764_10026`).
    """

    def __init__(self, name: str, data_dir: str, split: str, manual_dir: str, size: int):
        import tensorflow_datasets as tfds

        self.size = size
        builder = tfds.builder(name, data_dir=data_dir or None, file_format="array_record")
        if not builder.is_prepared() and manual_dir:
            if not os.path.isdir(manual_dir):
                raise records.DataError(f"data.tfds_manual_dir={manual_dir!r} does not exist")
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        try:
            self.ds = builder.as_data_source(split=split)
            self.names = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        except (KeyError, ValueError, NotImplementedError) as e:
            raise records.DataError(
                f"tfds dataset {name!r} split {split!r} is not prepared as array_record under data.tfds_dir="
                f"{builder.data_dir!r} ({type(e).__name__}: {e}); set data.tfds_manual_dir to the folder of the "
                f"manual-download tarballs to build it, or prepare it with file_format='array_record'") from None
        label = builder.info.features["label"]
        self.num_classes = label.num_classes
        self.class_names = list(label.names)
        self.info = {"source": "tfds", "name": name, "split": split, "data_dir": builder.data_dir}

    def __len__(self) -> int:
        return len(self.ds)

    def example(self, i: int) -> tuple[np.ndarray, int]:
        ex = self.ds[i]
        return imagenet.center_crop_adm(Image.fromarray(np.asarray(ex["image"])), self.size), int(ex["label"])

    def relpaths(self) -> list[str]:
        out = []
        for i in range(len(self.names)):
            ex = self.names[i]
            f = ex["file_name"]
            stem = os.path.splitext(f.decode() if isinstance(f, bytes) else str(f))[0]
            out.append(f"{self.class_names[int(ex['label'])]}/{stem}")
        return out


def open_source(data):
    """The source of `config.data` (data.image_source: 'folder' or 'tfds')."""
    if data.image_source == "tfds":
        return TfdsSource(data.tfds_name, data.tfds_dir, data.tfds_split, data.tfds_manual_dir, data.image_size)
    return FolderSource(data.imagenet_dir, data.image_size)
