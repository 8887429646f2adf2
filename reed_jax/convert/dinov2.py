"""DINOv2 state dicts -> reed_jax DinoV2 params (pure functions over numpy arrays, no torch).

`from_torch_hub(sd)`: the facebookresearch/dinov2 checkpoints (`dinov2_vitb14.pth`,
`dinov2_vitb14_reg4_pretrain.pth`): `patch_embed.proj`, `cls_token`, `pos_embed`,
`register_tokens`, `mask_token` (unused), `blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2 | mlp.w12, mlp.w3, ls2.gamma}`, `norm`.
`from_transformers(sd)`: the released safetensors (`facebook/dinov2-base`,
`facebook/dinov2-with-registers-base`): `embeddings.*`, `encoder.layer.i.*` with separate
query/key/value (`attention.attention.{query,key,value}` and `attention.output.dense` as released,
or `attention.{q,k,v,o}_proj` as transformers >= 5 names them), `layer_scale{1,2}.lambda1`,
`mlp.{fc1,fc2}` or SwiGLU `mlp.{weights_in,weights_out}` / `mlp.{gate,up,down}_proj`, `layernorm`.
`model_kwargs(sd)` infers the DinoV2 constructor arguments from a hub-named state dict.
Every key must be consumed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

# The released DINOv2 sizes: name -> (hidden, depth, heads) (the facebookresearch/dinov2 checkpoints);
# reed_jax.models.encoders.dinov2 builds its registry from this table.
SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "G": (1536, 40, 24)}


class ConversionError(ValueError):
    pass


def _dense(sd, prefix, used):
    used.update({prefix + ".weight", prefix + ".bias"})
    missing = [k for k in (prefix + ".weight", prefix + ".bias") if k not in sd]
    if missing:
        raise ConversionError(f"state dict is missing {missing}")
    return {"kernel": sd[prefix + ".weight"].T, "bias": sd[prefix + ".bias"]}


def _norm(sd, prefix, used):
    d = _dense(sd, prefix, used)
    return {"scale": d["kernel"].T, "bias": d["bias"]}


def from_torch_hub(state_dict: Mapping[str, np.ndarray]) -> dict:
    sd = {k.removeprefix("module.").removeprefix("backbone."): np.asarray(v, np.float32) for k, v in state_dict.items()}
    used = {"mask_token"}
    w = sd["patch_embed.proj.weight"]  # [D, 3, p, p]
    params = {"patch_embed": {"kernel": w.transpose(2, 3, 1, 0), "bias": sd["patch_embed.proj.bias"]},
              "cls_token": sd["cls_token"], "pos_embed": sd["pos_embed"]}
    used.update({"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"})
    if "register_tokens" in sd:
        params["register_tokens"] = sd["register_tokens"]
        used.add("register_tokens")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    for i in range(depth):
        b = f"blocks.{i}"
        mlp = ({"w12": _dense(sd, f"{b}.mlp.w12", used), "w3": _dense(sd, f"{b}.mlp.w3", used)}
               if f"{b}.mlp.w12.weight" in sd else
               {"fc1": _dense(sd, f"{b}.mlp.fc1", used), "fc2": _dense(sd, f"{b}.mlp.fc2", used)})
        params[f"blocks_{i}"] = {
            "norm1": _norm(sd, f"{b}.norm1", used), "norm2": _norm(sd, f"{b}.norm2", used),
            "attn": {"qkv": _dense(sd, f"{b}.attn.qkv", used), "proj": _dense(sd, f"{b}.attn.proj", used)},
            "ls1": sd[f"{b}.ls1.gamma"], "ls2": sd[f"{b}.ls2.gamma"], "mlp": mlp}
        used.update({f"{b}.ls1.gamma", f"{b}.ls2.gamma"})
    params["norm"] = _norm(sd, "norm", used)
    unused = sorted(set(sd) - used)
    if unused:
        raise ConversionError(f"state dict keys not converted: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    return params


def transformers_to_hub(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename (and fuse q/k/v, gate/up) a transformers DINOv2 state dict into the hub naming."""
    sd = {k.removeprefix("dinov2."): np.asarray(v) for k, v in state_dict.items()}
    out: dict[str, np.ndarray] = {}
    simple = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
              "embeddings.position_embeddings": "pos_embed", "embeddings.register_tokens": "register_tokens",
              "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
              "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
              "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    layer = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
    groups: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for k, v in sd.items():
        if k in simple:
            out[simple[k]] = v
            continue
        m = layer.fullmatch(k)
        if m is None:
            raise ConversionError(f"unexpected transformers DINOv2 key {k!r}")
        i, rest = int(m.group(1)), m.group(2)
        b = f"blocks.{i}"
        ren = {"norm1.": "norm1.", "norm2.": "norm2.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.",
               "attention.output.dense.": "attn.proj.", "attention.o_proj.": "attn.proj.",
               "mlp.weights_in.": "mlp.w12.", "mlp.weights_out.": "mlp.w3.", "mlp.down_proj.": "mlp.w3."}
        if rest in ("layer_scale1.lambda1", "layer_scale2.lambda1"):
            out[f"{b}.ls{rest[11]}.gamma"] = v
            continue
        for src, dst in ren.items():
            if rest.startswith(src):
                out[f"{b}.{dst}{rest[len(src):]}"] = v
                break
        else:
            qkv = re.fullmatch(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)", rest)
            glu = re.fullmatch(r"mlp\.(gate_proj|up_proj)\.(weight|bias)", rest)
            if qkv:
                groups.setdefault((i, "qkv." + qkv.group(2)), {})[qkv.group(1)[0]] = v
            elif glu:
                groups.setdefault((i, "glu." + glu.group(2)), {})[glu.group(1)[0]] = v
            else:
                raise ConversionError(f"unexpected transformers DINOv2 key {k!r}")
    for (i, what), parts in groups.items():
        kind, leaf = what.split(".")
        order = "qkv" if kind == "qkv" else "gu"
        if sorted(parts) != sorted(order):
            raise ConversionError(f"encoder.layer.{i}: incomplete {kind} projections {sorted(parts)}")
        name = "attn.qkv" if kind == "qkv" else "mlp.w12"
        out[f"blocks.{i}.{name}.{leaf}"] = np.concatenate([parts[c] for c in order], axis=0)
    return out


def from_transformers(state_dict: Mapping[str, np.ndarray]) -> dict:
    return from_torch_hub(transformers_to_hub(state_dict))


def model_kwargs(hub_state_dict: Mapping[str, np.ndarray], heads: int | None = None) -> dict:
    """DinoV2(**kwargs) matching a hub-named state dict (heads from the released sizes unless given)."""
    sd = hub_state_dict
    d = sd["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    if heads is None:
        known = {h: n for h, _, n in SIZES.values()}
        if d not in known:
            raise ConversionError(f"hidden size {d} is not a released DINOv2 size; pass heads=")
        heads = known[d]
    regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    grid = int(round(np.sqrt(sd["pos_embed"].shape[1] - 1)))
    return dict(hidden=d, depth=depth, heads=heads, patch=sd["patch_embed.proj.weight"].shape[-1],
                swiglu="blocks.0.mlp.w12.weight" in sd, registers=regs, pos_grid=grid,
                interpolate_offset=0.0 if regs else 0.1, interpolate_antialias=bool(regs))
