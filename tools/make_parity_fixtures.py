"""Regenerate the PyTorch parity fixtures in tests/fixtures/ (run by hand, never in CI).

    python3 -m venv /tmp/fixvenv
    /tmp/fixvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy &&
        /tmp/fixvenv/bin/pip install --no-deps pytorch-fid==0.3.0
    /tmp/fixvenv/bin/python tools/make_parity_fixtures.py \
        [inception] [torch_files] [sit_checkpoint] [sit] [dinov2] [vae] [vae_f16c32] [vavae_ldm] [safetensors_file]

inception: pytorch-fid's FID InceptionV3 (`fid_inception_v3`, its FIDInceptionA/C/E blocks) with
deterministic random weights (tests/fixture_weights.py; the pretrained download is bypassed),
batch-norm statistics calibrated on a random batch so activations stay O(1) through the depth,
run in eval mode on 80x80 uint8 images scaled (x - 128) / 128. Stores the key list, shapes,
seed, the calibrated BN statistics, the images and pool_3, Mixed_6d branch1x1[:7] (flattened h, w,
c) and pool_3 @ fc.weight.T.

torch_files: tiny checkpoints in both torch.save formats for the torch-free reader.
sit_checkpoint: a tiny REED-style SiT training checkpoint for the importer.
sit: a tiny PyTorch SiT (REPA's layout and names, REED's token and pooled projectors) with random
weights, its state dict, inputs, velocity and both projections (tests/image/test_convert.py).
vae: a tiny diffusers AutoencoderKL (needs `pip install diffusers`).
vae_f16c32: a tiny diffusers AutoencoderKL of REPA-E's E2E-VAVAE / E2E-INVAE shape (5 levels: 16x
downsampling, 32 latent channels, attention blocks at the lowest level as AttnDown/UpBlock2D).
vavae_ldm: a tiny LDM (latent-diffusion / VQGAN-KL) AutoencoderKL as VA-VAE (LightningDiT) and
REPA-E's original `.pt` files name it, from a small torch definition below (`_ldm_autoencoder`).
dinov2: tiny transformers DINOv2 models (plain, SwiGLU, registers) on REPA's preprocessing
(needs `pip install transformers` in the same venv).
pdb2021: a tiny tree in ProteinMPNN's pdb_2021aug02 layout (torch.save chain files).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from fixture_weights import random_state_dict  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "fixtures")


def inception():
    from pytorch_fid import inception as pf

    pf.load_state_dict_from_url = lambda *a, **k: None  # no download: random weights below
    orig = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, sd, *a, **k: None if sd is None else orig(self, sd, *a, **k)
    net = pf.fid_inception_v3()
    model = pf.InceptionV3([3], resize_input=False, normalize_input=False, use_fid_inception=True)
    torch.nn.Module.load_state_dict = orig
    sd = net.state_dict()
    keys = list(sd)
    shapes = [tuple(v.shape) for v in sd.values()]
    seed = 0
    net.load_state_dict({k: torch.from_numpy(v) for k, v in random_state_dict(keys, shapes, seed).items()})

    # the wrapper's own blocks come from another fid_inception_v3(): point them at `net`
    model.blocks = torch.nn.ModuleList([
        torch.nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
                            net.Mixed_6d, net.Mixed_6e),
        torch.nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))),
    ])
    rng = np.random.default_rng(1)
    calib = torch.from_numpy((rng.integers(0, 256, (8, 3, 80, 80)).astype(np.float32) - 128) / 128)
    for m in model.modules():  # running statistics := this batch's statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(calib)
    model.eval()

    images = rng.integers(0, 256, (2, 80, 80, 3)).astype(np.uint8)
    x = torch.from_numpy((images.astype(np.float32) - 128) / 128).permute(0, 3, 1, 2)
    captured = {}
    net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.update(b1=o))
    with torch.no_grad():
        pool = model(x)[0][:, :, 0, 0]
    spatial = captured["b1"][:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    logits = (pool @ net.fc.weight.T).detach()
    stats = {f"stat:{k}": v.numpy() for k, v in net.state_dict().items() if "running_" in k}
    np.savez_compressed(os.path.join(OUT, "inception_parity.npz"), keys=np.array(keys), seed=seed,
                        shapes=np.array([np.array(s + (0,) * (4 - len(s))) for s in shapes]),
                        ndims=np.array([len(s) for s in shapes]), images=images, pool_3=pool.numpy(),
                        spatial=spatial.numpy(), logits=logits.numpy(), **stats)
    print("pool_3", pool.shape, float(pool.abs().mean()), "spatial", spatial.shape, "logits", logits.shape)


def torch_files():
    """Small checkpoints in both torch.save formats (zip and legacy) with the dtypes, views and
    nesting a real checkpoint has, and the arrays they hold."""
    import collections

    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["a.weight"] = torch.randn(3, 4, generator=g)
    sd["a.bias"] = torch.randn(4, generator=g).double()
    sd["t"] = torch.randn(5, 6, generator=g).t()  # non-contiguous
    sd["h"] = torch.randn(2, 3, generator=g).half()
    sd["b"] = torch.randn(2, 3, generator=g).bfloat16()
    sd["i"] = torch.arange(6).reshape(2, 3)
    sd["n"] = torch.tensor(7)
    base = torch.randn(10, generator=g)
    sd["v1"], sd["v2"] = base[2:5], base[5:9].view(2, 2)  # views sharing one storage
    ckpt = {"model": sd, "ema": {k: v * 2 for k, v in sd.items() if v.is_floating_point()},
            "args": {"lr": 1e-4}, "steps": 3}
    torch.save(ckpt, os.path.join(OUT, "ckpt_zip.pt"))
    torch.save(ckpt, os.path.join(OUT, "ckpt_legacy.pt"), _use_new_zipfile_serialization=False)
    as_np = lambda v: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    np.savez(os.path.join(OUT, "ckpt_expected.npz"), **{f"model/{k}": as_np(v) for k, v in sd.items()},
             **{f"ema/{k}": as_np(v) for k, v in ckpt["ema"].items()})


def sit_checkpoint():
    """A REED-style training checkpoint of a tiny SiT (tests/image/test_convert.py's sizes: C=3, 8x8,
    patch 2, D=16, depth 2, 2 heads, 5 classes, projectors of width 12 onto 8 (tokens) and 6 dims),
    as REPA's train.py saves it: {'model', 'ema', 'opt', 'args', 'steps'}, keys prefixed as the
    reference names them. `model` and `ema` differ so a test can tell which one was imported."""
    C, P, D, DEPTH, NCLS, W = 3, 2, 16, 2, 5, 12
    rng = np.random.default_rng(7)
    sd = {}

    def lin(name, i, o):
        sd[name + ".weight"] = rng.normal(size=(o, i)).astype(np.float32) * 0.3
        sd[name + ".bias"] = rng.normal(size=(o,)).astype(np.float32) * 0.1

    sd["x_embedder.proj.weight"] = rng.normal(size=(D, C, P, P)).astype(np.float32) * 0.3
    sd["x_embedder.proj.bias"] = rng.normal(size=(D,)).astype(np.float32) * 0.1
    sd["y_embedder.embedding_table.weight"] = rng.normal(size=(NCLS + 1, D)).astype(np.float32)
    lin("t_embedder.mlp.0", 256, D)
    lin("t_embedder.mlp.2", D, D)
    for i in range(DEPTH):
        for name, a, b in (("attn.qkv", D, 3 * D), ("attn.proj", D, D), ("mlp.fc1", D, 4 * D),
                           ("mlp.fc2", 4 * D, D), ("adaLN_modulation.1", D, 6 * D)):
            lin(f"blocks.{i}.{name}", a, b)
    lin("final_layer.adaLN_modulation.1", D, 2 * D)
    lin("final_layer.linear", D, P * P * C)
    for k, z in enumerate((8, 6)):
        lin(f"projectors.{k}.0", D, W)
        lin(f"projectors.{k}.2", W, W)
        lin(f"projectors.{k}.4", W, z)
    ema = {k: torch.from_numpy(v) for k, v in sd.items()}
    model = {k: torch.from_numpy(v * 1.5) for k, v in sd.items()}
    torch.save({"model": model, "ema": ema, "opt": {"state": {}}, "args": {"lr": 1e-4}, "steps": 1234},
               os.path.join(OUT, "sit_tiny_checkpoint.pt"))


def dinov2():
    """transformers' Dinov2Model (plain, SwiGLU) and Dinov2WithRegistersModel with tiny random
    configurations (D=16, 2 layers, 2 heads, patch 14, 518px position table = 37x37) on one
    256x256 uint8 image preprocessed as REPA does (x/255, ImageNet mean/std, F.interpolate to 224
    bicubic), plus the torch-hub position-embedding resample (scale_factor (16 + 0.1) / 37)."""
    import torch.nn.functional as F
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (1, 256, 256, 3)).astype(np.uint8)
    x = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate((x - mean) / std, 224, mode="bicubic")
    out = {"image": image, "preprocessed_top": x.permute(0, 2, 3, 1).numpy()[:, :40]}  # top rows: borders + interior
    common = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=518)
    models = {"plain": Dinov2Model(Dinov2Config(**common)),
              "swiglu": Dinov2Model(Dinov2Config(use_swiglu_ffn=True, **common)),
              "registers": Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common))}
    for name, model in models.items():
        with torch.no_grad():
            for p in model.parameters():  # every weight random and O(1): layer scales, tokens, norms
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim > 1 else 0.3))
            model.eval()
            h = model(pixel_values=x).last_hidden_state
        for k, v in model.state_dict().items():
            out[f"{name}/sd/{k}"] = v.numpy()
        out[f"{name}/last_hidden_state"] = h.numpy()
    grid = models["plain"].embeddings.position_embeddings[:, 1:].detach().reshape(1, 37, 37, 16).permute(0, 3, 1, 2)
    hub = F.interpolate(grid, mode="bicubic", antialias=False, scale_factor=((16 + 0.1) / 37, (16 + 0.1) / 37))
    out["hub_pos_resampled"] = hub.permute(0, 2, 3, 1).numpy()
    np.savez_compressed(os.path.join(OUT, "dinov2_parity.npz"), **out)
    print({k: v.shape for k, v in out.items() if "/sd/" not in k})


def vae():
    """diffusers AutoencoderKL with a tiny configuration (widths 16, 32; 1 ResNet block per level;
    GroupNorm(8)) and random weights: encoder moments of a 32x32 image and the decoder output of a
    random 16x16 latent."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                          layers_per_block=1, norm_num_groups=8, sample_size=32,
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    z = rng.normal(size=(1, 4, 16, 16)).astype(np.float32)
    with torch.no_grad():
        post = model.encode(torch.from_numpy(x)).latent_dist
        dec = model.decode(torch.from_numpy(z)).sample
    out = {"x": x.transpose(0, 2, 3, 1), "z": z.transpose(0, 2, 3, 1),
           "mean": post.mean.numpy().transpose(0, 2, 3, 1), "std": post.std.numpy().transpose(0, 2, 3, 1),
           "decoded": dec.numpy().transpose(0, 2, 3, 1)}
    out.update({f"sd/{k}": v.numpy() for k, v in model.state_dict().items()})
    np.savez_compressed(os.path.join(OUT, "vae_parity.npz"), **out)
    print({k: v.shape for k, v in out.items() if not k.startswith("sd/")}, len(model.state_dict()), "tensors")


def _vae_outputs(encode, decode, latent, size, seed):
    """Encoder moments of a random [1, size, size, 3] image and the decoding of a random latent (NHWC)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    z = rng.normal(size=(1, latent, size // 16, size // 16)).astype(np.float32)
    with torch.no_grad():
        mean, std = encode(torch.from_numpy(x))
        dec = decode(torch.from_numpy(z))
    nhwc = lambda a: np.asarray(a).transpose(0, 2, 3, 1)
    return {"x": nhwc(x), "z": nhwc(z), "mean": nhwc(mean.numpy()), "std": nhwc(std.numpy()), "decoded": nhwc(dec.numpy())}


def vae_f16c32():
    """diffusers AutoencoderKL of REPA-E's f16c32 shape with tiny widths (4, 4, 4, 4, 8), 1 ResNet
    block per level, GroupNorm(2), attention at the lowest level: moments of a 32x32 image (2x2x32)
    and the decoding of a random 2x2x32 latent."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=32, block_out_channels=(4, 4, 4, 4, 8),
                          layers_per_block=1, norm_num_groups=2, sample_size=32,
                          down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
                          up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()

    def encode(x):
        post = model.encode(x).latent_dist
        return post.mean, post.std
    out = _vae_outputs(encode, lambda z: model.decode(z).sample, 32, 32, 6)
    out.update({f"sd/{k}": v.numpy() for k, v in model.state_dict().items()})
    np.savez_compressed(os.path.join(OUT, "vae_f16c32_parity.npz"), **out)
    print({k: v.shape for k, v in out.items() if not k.startswith("sd/")}, len(model.state_dict()), "tensors")


def _ldm_autoencoder(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, groups):
    """The latent-diffusion AutoencoderKL (ldm/modules/diffusionmodules/model.py Encoder/Decoder,
    ldm/models/autoencoder.py; VA-VAE's tokenizer/autoencoder.py and REPA-E's models/autoencoder.py
    keep it), written out small for the fixture: GroupNorm(`groups`, eps 1e-6) (LDM: 32), SiLU, no
    timestep embedding, dropout 0, convolutional resampling, double_z, embed_dim = z_channels."""
    nn, F = torch.nn, torch.nn.functional
    norm = lambda c: nn.GroupNorm(groups, c, eps=1e-6, affine=True)

    class Resnet(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
            self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
            if cin != cout:
                self.nin_shortcut = nn.Conv2d(cin, cout, 1)

        def forward(self, x):
            h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
            return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h

    class Attn(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = norm(c)
            self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

        def forward(self, x):
            b, c, hh, ww = x.shape
            h = self.norm(x)
            q = self.q(h).reshape(b, c, -1).permute(0, 2, 1)
            k, v = self.k(h).reshape(b, c, -1), self.v(h).reshape(b, c, -1)
            w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
            return x + self.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww))

    class Down(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 2, 0)

        def forward(self, x):
            return self.conv(F.pad(x, (0, 1, 0, 1)))

    class Up(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 1, 1)

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    def mid(c):
        m = nn.Module()
        m.block_1, m.attn_1, m.block_2 = Resnet(c, c), Attn(c), Resnet(c, c)
        return m

    n = len(ch_mult)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
            res, cin, self.down = resolution, ch, nn.ModuleList()
            for i in range(n):
                lvl, cout = nn.Module(), ch * ch_mult[i]
                lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
                for _ in range(num_res_blocks):
                    lvl.block.append(Resnet(cin, cout))
                    cin = cout
                    if res in attn_resolutions:
                        lvl.attn.append(Attn(cin))
                if i != n - 1:
                    lvl.downsample = Down(cin)
                    res //= 2
                self.down.append(lvl)
            self.mid = mid(cin)
            self.norm_out, self.conv_out = norm(cin), nn.Conv2d(cin, 2 * z_channels, 3, 1, 1)

        def forward(self, x):
            h = self.conv_in(x)
            for i, lvl in enumerate(self.down):
                for j, blk in enumerate(lvl.block):
                    h = blk(h)
                    if len(lvl.attn):
                        h = lvl.attn[j](h)
                if i != n - 1:
                    h = lvl.downsample(h)
            h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
            return self.conv_out(F.silu(self.norm_out(h)))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            cin, res = ch * ch_mult[-1], resolution // 2 ** (n - 1)
            self.conv_in = nn.Conv2d(z_channels, cin, 3, 1, 1)
            self.mid = mid(cin)
            self.up = nn.ModuleList()
            for i in reversed(range(n)):
                lvl, cout = nn.Module(), ch * ch_mult[i]
                lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
                for _ in range(num_res_blocks + 1):
                    lvl.block.append(Resnet(cin, cout))
                    cin = cout
                    if res in attn_resolutions:
                        lvl.attn.append(Attn(cin))
                if i != 0:
                    lvl.upsample = Up(cin)
                    res *= 2
                self.up.insert(0, lvl)
            self.norm_out, self.conv_out = norm(cin), nn.Conv2d(cin, 3, 3, 1, 1)

        def forward(self, z):
            h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
            for i in reversed(range(n)):
                lvl = self.up[i]
                for j, blk in enumerate(lvl.block):
                    h = blk(h)
                    if len(lvl.attn):
                        h = lvl.attn[j](h)
                if i != 0:
                    h = lvl.upsample(h)
            return self.conv_out(F.silu(self.norm_out(h)))

    class AutoencoderKL(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Encoder(), Decoder()
            self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)
            self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

        def encode(self, x):  # DiagonalGaussianDistribution: logvar clamped to [-30, 20]
            mean, logvar = torch.chunk(self.quant_conv(self.encoder(x)), 2, dim=1)
            return mean, torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))

        def decode(self, z):
            return self.decoder(self.post_quant_conv(z))

    return AutoencoderKL()


def vavae_ldm():
    """VA-VAE's LDM AutoencoderKL (vavae_f16d32.yaml: ch_mult (1, 1, 2, 2, 4), attn_resolutions [16]
    at resolution 256, i.e. attention at the lowest of 5 levels; z_channels 32) with tiny widths:
    ch 4, ch_mult (1, 1, 1, 1, 2), 1 ResNet block, GroupNorm(2), resolution 32 with attention at 2
    (the lowest level again). The state dict as a VA-VAE checkpoint holds it, plus keys a training
    checkpoint carries beside the autoencoder (`loss.*`, the VF projection) which the converter drops,
    and LightningDiT-style latent statistics (`stats_mean`, `stats_std`, [1, 32, 1, 1])."""
    torch.manual_seed(2)
    model = _ldm_autoencoder(4, (1, 1, 1, 1, 2), 1, (2,), 32, 32, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    out = _vae_outputs(model.encode, model.decode, 32, 32, 7)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    g = np.random.default_rng(8)
    sd["loss.logvar"] = np.zeros((), np.float32)
    sd["loss.discriminator.main.0.weight"] = g.normal(size=(4, 3, 4, 4)).astype(np.float32)
    sd["linear_proj.weight"] = g.normal(size=(4, 32, 1, 1)).astype(np.float32)
    out.update({f"sd/{k}": v for k, v in sd.items()})
    out["stats_mean"] = g.normal(size=(1, 32, 1, 1)).astype(np.float32)
    out["stats_std"] = g.uniform(0.5, 2.0, (1, 32, 1, 1)).astype(np.float32)
    np.savez_compressed(os.path.join(OUT, "vavae_ldm_parity.npz"), **out)
    print({k: v.shape for k, v in out.items() if not k.startswith("sd/")}, len(sd), "tensors")


def safetensors_file():
    """A small .safetensors file written by the safetensors library (f32, f16, bf16, int, scalar)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    t = {"a": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g).half(),
         "b": torch.randn(2, 3, generator=g).bfloat16(), "i": torch.arange(6).reshape(2, 3), "s": torch.tensor(3.5)}
    save_file(t, os.path.join(OUT, "tiny.safetensors"), metadata={"format": "pt"})
    np.savez(os.path.join(OUT, "tiny_safetensors_expected.npz"),
             **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in t.items()})


def pdb2021():
    """A tiny tree in ProteinMPNN's pdb_2021aug02 layout (torch.save chain files): 4 chains in 3
    clusters (cluster 10 train with 2 members, 20 validation, 30 test), helices with one missing O."""
    root = os.path.join(OUT, "pdb2021_tiny")
    rng = np.random.default_rng(0)
    rows = [("1abc_A", 10), ("1abd_B", 10), ("2xyz_A", 20), ("3qqq_A", 30)]
    lines = ["CHAINID,DEPOSITION,RESOLUTION,HASH,CLUSTER,SEQUENCE"]
    for cid, cluster in rows:
        n = 24
        seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))
        i = np.arange(n)[:, None]
        ca = np.concatenate([2.3 * np.cos(i * 1.75), 2.3 * np.sin(i * 1.75), 1.5 * i], axis=1)
        xyz = np.full((n, 14, 3), np.nan, np.float32)
        for a, off in enumerate(([-0.5, 0.8, -0.6], [0, 0, 0], [0.6, 0.9, 0.7], [1.1, 1.8, 1.1])):
            xyz[:, a] = ca + np.asarray(off)
        xyz[3, 3] = np.nan  # a missing O
        mask = np.isfinite(xyz).all(-1)
        os.makedirs(os.path.join(root, "pdb", cid[1:3]), exist_ok=True)
        torch.save({"seq": seq, "xyz": torch.from_numpy(xyz), "mask": torch.from_numpy(mask),
                    "bfac": torch.zeros(n, 14), "occ": torch.ones(n, 14)},
                   os.path.join(root, "pdb", cid[1:3], f"{cid}.pt"))
        lines.append(f"{cid},2020-01-01,2.0,abc,{cluster},{seq}")
    with open(os.path.join(root, "list.csv"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "valid_clusters.txt"), "w") as fh:
        fh.write("20\n")
    with open(os.path.join(root, "test_clusters.txt"), "w") as fh:
        fh.write("30\n")


# SiT sizes of tests/image/test_convert.py::test_sit_matches_a_pytorch_forward (tests/fixtures/sit_parity.npz)
SIT = dict(C=4, HW=8, P=2, D=32, DEPTH=4, HEADS=4, NCLS=5, W=24, TOK=(2, 10), POOL=(3, 7))


def sit():
    """A PyTorch SiT written here in REPA's layout and parameter names (models/sit.py there:
    x_embedder.proj conv, t_embedder.mlp, y_embedder.embedding_table, blocks.{i}.attn.{qkv,proj},
    blocks.{i}.mlp.fc{1,2}, blocks.{i}.adaLN_modulation.1, final_layer.*, projectors.{k}.{0,2,4},
    pos_embed) with REED's two projectors: projectors.0 on every token after block TOK[0]
    (REED's encoder_depth, image target), projectors.1 on the token mean after block POOL[0]
    (encoder_depth_text, pooled target). Every weight random (adaLN and final layers included, so
    every layer changes the output), float64 forward in eval mode (no label dropout).
    Saves `sd/<name>` weights, x [B, C, H, W], t [B], y [B] (one null label), velocity
    [B, C, H, W], z_tok [B, T, TOK[1]], z_pool [B, POOL[1]]."""
    import math

    nn = torch.nn
    C, HW, P, D, DEPTH, HEADS, NCLS, W = (SIT[k] for k in ("C", "HW", "P", "D", "DEPTH", "HEADS", "NCLS", "W"))
    tok_depth, tok_dim = SIT["TOK"]
    pool_depth, pool_dim = SIT["POOL"]
    G = HW // P

    def mlp3(i, w, o):  # projector: Linear-SiLU-Linear-SiLU-Linear (indices 0, 2, 4)
        return nn.Sequential(nn.Linear(i, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(), nn.Linear(w, o))

    def mod(x, shift, scale):
        return x * (1 + scale[:, None]) + shift[:, None]

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(C, D, P, stride=P, bias=True)

        def forward(self, x):  # [B, C, H, W] -> [B, T, D], tokens row-major over (h, w)
            return self.proj(x).flatten(2).transpose(1, 2)

    class TimeEmb(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))

        def forward(self, t):
            k = torch.arange(128, dtype=t.dtype)
            arg = t[:, None] * torch.exp(-math.log(10000.0) * k / 128)[None]
            return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], -1))

    class LabelEmb(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding_table = nn.Embedding(NCLS + 1, D)

        def forward(self, y):
            return self.embedding_table(y)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
            w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // HEADS), -1)
            return self.proj((w @ v).transpose(1, 2).reshape(b, n, D))

    class FF(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

        def forward(self, x):
            return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))

    def norm():
        return nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn, self.norm2, self.mlp = norm(), Attn(), norm(), FF()
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

        def forward(self, x, c):
            s1, c1, g1, s2, c2, g2 = self.adaLN_modulation(c).chunk(6, -1)
            x = x + g1[:, None] * self.attn(mod(self.norm1(x), s1, c1))
            return x + g2[:, None] * self.mlp(mod(self.norm2(x), s2, c2))

    class Final(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_final, self.linear = norm(), nn.Linear(D, P * P * C)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))

        def forward(self, x, c):
            shift, scale = self.adaLN_modulation(c).chunk(2, -1)
            return self.linear(mod(self.norm_final(x), shift, scale))

    class SiT(nn.Module):
        def __init__(self):
            super().__init__()
            self.x_embedder, self.t_embedder, self.y_embedder = PatchEmbed(), TimeEmb(), LabelEmb()
            # fixed 2D sin-cos table (MAE): first half of the channels from the w coordinate
            gw, gh = np.meshgrid(np.arange(G, dtype=np.float64), np.arange(G, dtype=np.float64))
            omega = 1.0 / 10000 ** (np.arange(D // 4, dtype=np.float64) / (D // 4))

            def one(pos):
                a = pos.reshape(-1)[:, None] * omega[None]
                return np.concatenate([np.sin(a), np.cos(a)], 1)

            table = np.concatenate([one(gw), one(gh)], 1)[None]
            self.pos_embed = nn.Parameter(torch.from_numpy(table), requires_grad=False)
            self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
            self.projectors = nn.ModuleList([mlp3(D, W, tok_dim), mlp3(D, W, pool_dim)])
            self.final_layer = Final()

        def forward(self, x, t, y):
            h = self.x_embedder(x) + self.pos_embed
            c = self.t_embedder(t) + self.y_embedder(y)
            for i, blk in enumerate(self.blocks):
                h = blk(h, c)
                if i + 1 == tok_depth:
                    z_tok = self.projectors[0](h)
                if i + 1 == pool_depth:
                    z_pool = self.projectors[1](h.mean(1))
            out = self.final_layer(h, c).reshape(h.shape[0], G, G, P, P, C)
            return torch.einsum("nhwpqc->nchpwq", out).reshape(h.shape[0], C, HW, HW), z_tok, z_pool

    torch.manual_seed(0)
    model = SiT().double().eval()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name != "pos_embed":
                fan_in = prm.shape[1] if prm.ndim == 2 else (prm[0].numel() if prm.ndim == 4 else prm.numel())
                scale = 1.0 if "embedding_table" in name else (0.1 if prm.ndim == 1 else 1.0 / math.sqrt(fan_in))
                prm.copy_(torch.randn_like(prm) * scale)
    x = torch.randn(3, C, HW, HW, dtype=torch.float64)
    t = torch.tensor([0.05, 0.5, 0.97], dtype=torch.float64)
    y = torch.tensor([0, 3, NCLS])  # the last row: the null (CFG) label
    with torch.no_grad():
        v, z_tok, z_pool = model(x, t, y)
    sd = {f"sd/{k}": p.detach().float().numpy() for k, p in model.state_dict().items()}
    np.savez_compressed(os.path.join(OUT, "sit_parity.npz"), **sd, x=x.float().numpy(), t=t.float().numpy(),
                        y=y.numpy().astype(np.int32), velocity=v.numpy(), z_tok=z_tok.numpy(), z_pool=z_pool.numpy(),
                        sizes=np.array([C, HW, P, D, DEPTH, HEADS, NCLS, W, tok_depth, tok_dim, pool_depth, pool_dim]))


if __name__ == "__main__":
    targets = {"safetensors_file": safetensors_file, "vae": vae, "vae_f16c32": vae_f16c32, "vavae_ldm": vavae_ldm,
               "inception": inception, "torch_files": torch_files,
               "sit_checkpoint": sit_checkpoint, "sit": sit,
               "dinov2": dinov2, "pdb2021": pdb2021}
    for name in sys.argv[1:] or list(targets):
        targets[name]()
