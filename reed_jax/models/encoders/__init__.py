"""Frozen target encoders and their registry: a config names each target's encoder.

`targets.<name>.encoder` is one of `names()`:
- an image encoder registered by a module of this package (`dinov2_vitb14`, `dinov2_vitb14_reg`,
  ..., `dinov2` for any width; EfficientNet-Lite0's `efficientnet_lite0_<stageN|head|pooled>`):
  `build(name, target, config)` returns a `FrozenEncoder` whose
  `apply(params, images)` maps uint8 ADM crops [B, S, S, 3] to the target's features, [B, T, D]
  for token targets (`pooled=False`) or [B, D] for pooled ones; it runs in `--mode=precompute`
  (features stored in the shards) or inside the train step (`encoder.mode='online'`);
- `external`: embeddings computed elsewhere (REED's VLM vectors) imported from `targets.<name>.source`;
- `digits`: the embedded digits encoder (fitted here once and cached, `data.source='digits'`);
- `proteinmpnn`: the protein track's frozen teacher, ProteinMPNN with released weights
  (reed_jax/protein/teacher.py), run on the native chain;
- `qm9_property`: the molecule track's stand-in 3D encoder, trained here once on QM9's DFT
  properties and cached (reed_jax/molecule/encoder.py), its pooled vector the target;
- `ani1x`: the molecule track's pretrained ANI-1x potential (reed_jax/molecule/ani.py, weights from
  the torchani 2.2.4 wheel), a hidden layer's atom features averaged over atoms the target;
- `affinity`: no encoder: an attention target (HASTE) whose teacher map is the softmax of the cosine
  affinities between another target's tokens (`affinity_of`), for teachers without attention.

Adding an image encoder is one module: define a builder, decorate it with `@register('<name>')`,
and list the module in `_MODULES`.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

EXTERNAL, DIGITS, PROTEIN_TEACHER, MOLECULE_STANDIN = "external", "digits", "proteinmpnn", "qm9_property"
MOLECULE_ANI = "ani1x"
AFFINITY = "affinity"  # no encoder: an attention target's teacher map from another target's tokens
_MODULES = ("dinov2", "efficientnet")  # modules of this package that register image encoders
_BUILDERS: dict[str, Callable] = {}


@dataclasses.dataclass(frozen=True)
class FrozenEncoder:
    """apply(params, images uint8 [B, S, S, 3]) -> [B, T, D] or [B, D] float32 (jit-able, frozen)."""
    name: str
    apply: Callable[[Any, Any], Any]
    params: Any
    dim: int


def register(name: str):
    """Decorator: `builder(target, config) -> FrozenEncoder` under `name`."""
    def deco(fn):
        if name in _BUILDERS:
            raise ValueError(f"encoder {name!r} is registered twice")
        _BUILDERS[name] = fn
        return fn
    return deco


def image_encoders() -> tuple[str, ...]:
    for m in _MODULES:
        importlib.import_module(f"{__name__}.{m}")
    return tuple(sorted(_BUILDERS))


def names() -> tuple[str, ...]:
    return image_encoders() + (EXTERNAL, DIGITS, PROTEIN_TEACHER, MOLECULE_STANDIN, MOLECULE_ANI, AFFINITY)


def build(target_name: str, target, config) -> FrozenEncoder:
    """The frozen encoder of `targets.<target_name>` (weights from `targets.<target_name>.weights`)."""
    if target.encoder not in image_encoders():
        raise ValueError(f"targets.{target_name}.encoder={target.encoder!r} is not an image encoder; "
                         f"expected one of {image_encoders()}")
    enc = _BUILDERS[target.encoder](target_name, target, config)
    if enc.dim != target.dim:
        raise ValueError(f"targets.{target_name}.dim={target.dim} but the {target.encoder} weights in "
                         f"{target.weights!r} have width {enc.dim}")
    return enc


def build_online(named: dict, config) -> dict[str, FrozenEncoder]:
    """Frozen encoders for {target name: target} run inside the step, each `apply` returning
    {target name: output}: targets on the same encoder and weight file share one encoder (one
    forward) where the encoder's builder has a `group`, keyed by their names joined with '+'; others
    one each, keyed by the target's name."""
    groups: dict = {}
    for name, t in named.items():
        groups.setdefault((t.encoder, t.weights), {})[name] = t
    out = {}
    for (enc, _), items in groups.items():
        if enc not in image_encoders():
            raise ValueError(f"targets.{next(iter(items))}.encoder={enc!r} is not an image encoder")
        group = getattr(_BUILDERS[enc], "group", None)
        if group is not None and len(items) > 1:
            out["+".join(items)] = group(items, config)
        else:
            for n, t in items.items():
                enc = build(n, t, config)
                out[n] = dataclasses.replace(enc, apply=lambda p, images, n=n, f=enc.apply: {n: f(p, images)})
    return out


def load_or_fit(path: str, fit_fn: Callable[[], dict], log=print) -> dict:
    """Params cached at `path` (orbax), or `fit_fn()` once and saved there. The cache restores onto
    this process's first device whatever device saved it (in a multi-process run, process 1 has no
    `cpu:0`, the device a single-process precompute wrote into the metadata)."""
    path = os.path.abspath(path)
    ckptr = ocp.StandardCheckpointer()
    if os.path.isdir(path):
        log(f"loading cached encoder {path}")
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local),
                              ckptr.metadata(path).item_metadata)
        return ckptr.restore(path, target)
    params = fit_fn()
    ckptr.save(path, params)
    ckptr.wait_until_finished()
    return params


def digits_targets(params, images: np.ndarray) -> dict[str, np.ndarray]:
    """The digits encoder's targets: {'digits_tokens': [N, 16, 64], 'digits_pooled': [N, 128]}."""
    from reed_jax.models.encoders import classifier
    from reed_jax.models.encoders.digits import DigitsEncoder

    out = classifier.predict(DigitsEncoder(), params, images)
    return {"digits_tokens": out["tokens"], "digits_pooled": out["pooled"]}
