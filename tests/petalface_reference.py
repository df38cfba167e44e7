"""State dicts with the PETALface / arcface_torch key names and shapes, and a small independent forward of each.

Written for the tests from the reference's behaviour (not from petal-peft's model code): Swin windows without the
shifted-window mask (the reference computes it but never applies it), fused qkv with the two LoRA branches fed
``(1 - alpha) x`` and ``alpha x``, the flattened-token heads, and insightface's ViT (no CLS token, ReLU6 MLP,
LayerNorm or token BatchNorm).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------------- Swin


@dataclass
class SwinSpec:
    embed: int = 8
    depths: tuple[int, ...] = (2, 2, 1)
    heads: tuple[int, ...] = (1, 2, 2)
    patch: int = 2
    grid: int = 20
    window: int = 5
    emb: int = 16
    mlp_ratio: int = 2
    layout: str = "pretrained"  # "pretrained" | "lora" (single branch) | "quality_gated" (two branches on qkv)
    rank: int = 2
    head_lora: bool = True
    ape: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def image(self) -> int:
        return self.grid * self.patch


def _relative_index(window: int) -> torch.Tensor:
    coords = [(i, j) for i in range(window) for j in range(window)]
    index = torch.empty(len(coords), len(coords), dtype=torch.long)
    for a, (ia, ja) in enumerate(coords):
        for b, (ib, jb) in enumerate(coords):
            index[a, b] = (ia - ib + window - 1) * (2 * window - 1) + (ja - jb + window - 1)
    return index


def _bn(state: dict, prefix: str, width: int, gen: torch.Generator) -> None:
    state[prefix + "weight"] = torch.rand(width, generator=gen) + 0.5
    state[prefix + "bias"] = torch.randn(width, generator=gen) * 0.1
    state[prefix + "running_mean"] = torch.randn(width, generator=gen) * 0.1
    state[prefix + "running_var"] = torch.rand(width, generator=gen) + 0.5
    state[prefix + "num_batches_tracked"] = torch.tensor(7)


def _ln(state: dict, prefix: str, width: int, gen: torch.Generator) -> None:
    state[prefix + "weight"] = torch.rand(width, generator=gen) + 0.5
    state[prefix + "bias"] = torch.randn(width, generator=gen) * 0.1


def _linear(state: dict, prefix: str, out_f: int, in_f: int, gen: torch.Generator, bias: bool = True) -> None:
    state[prefix + "weight"] = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
    if bias:
        state[prefix + "bias"] = torch.randn(out_f, generator=gen) * 0.1


def _block(s: dict, k: str, dim: int, spec, gen, lora: bool, norm, qkv_bias: bool, after_norm1=None) -> None:
    """One transformer block's weights (norm, qkv with the reference's LoRA, proj, norm, MLP), drawn in order."""
    norm(k + "norm1.")
    if after_norm1 is not None:
        after_norm1()
    _linear(s, k + "attn.qkv.", 3 * dim, dim, gen, bias=qkv_bias)
    if lora:
        _lora(s, k + "attn.qkv.", 3 * dim, dim, spec.rank, gen, spec.layout == "quality_gated")
    _linear(s, k + "attn.proj.", dim, dim, gen)
    norm(k + "norm2.")
    _linear(s, k + "mlp.fc1.", spec.mlp_ratio * dim, dim, gen)
    _linear(s, k + "mlp.fc2.", dim, spec.mlp_ratio * dim, gen)


def _lora(state: dict, prefix: str, out_f: int, in_f: int, rank: int, gen: torch.Generator, two: bool) -> None:
    for suffix in ("", "2") if two else ("",):
        state[f"{prefix}trainable_lora_down{suffix}.weight"] = torch.randn(rank, in_f, generator=gen) / rank
        state[f"{prefix}trainable_lora_up{suffix}.weight"] = torch.randn(out_f, rank, generator=gen) * 0.3


def swin_state_dict(spec: SwinSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    e = spec.embed
    s["patch_embed.proj.weight"] = torch.randn(e, 3, spec.patch, spec.patch, generator=gen) * 0.3
    s["patch_embed.proj.bias"] = torch.randn(e, generator=gen) * 0.1
    _ln(s, "patch_embed.norm.", e, gen)
    if spec.ape:
        s["absolute_pos_embed"] = torch.randn(1, spec.grid**2, e, generator=gen) * 0.3
    res = spec.grid
    lora = spec.layout != "pretrained"
    for i, depth in enumerate(spec.depths):
        dim = e * 2**i
        win = min(spec.window, res)
        for j in range(depth):
            k = f"layers.{i}.blocks.{j}."

            def relative_position(k=k, win=win, heads=spec.heads[i]):
                s[k + "attn.relative_position_bias_table"] = torch.randn((2 * win - 1) ** 2, heads, generator=gen)
                s[k + "attn.relative_position_index"] = _relative_index(win)

            norm = functools.partial(_ln, s, width=dim, gen=gen)
            _block(s, k, dim, spec, gen, lora, norm, qkv_bias=True, after_norm1=relative_position)
            if j % 2 == 1 and res > spec.window:  # shifted block: the reference stores (but never uses) its mask
                s[k + "attn_mask"] = torch.zeros((res // win) ** 2, win * win, win * win)
        if i < len(spec.depths) - 1:
            s[f"layers.{i}.downsample.reduction.weight"] = (
                torch.randn(2 * dim, 4 * dim, generator=gen) / (4 * dim) ** 0.5
            )
            _ln(s, f"layers.{i}.downsample.norm.", 4 * dim, gen)
            res //= 2
    final = e * 2 ** (len(spec.depths) - 1)
    _ln(s, "norm.", final, gen)
    features = final * res * res
    _bn(s, "feature_layer.0.", features, gen)
    _linear(s, "feature_layer.2.", spec.emb, features, gen)
    if lora and spec.head_lora:
        _lora(s, "feature_layer.2.", spec.emb, features, spec.rank, gen, two=False)
    _bn(s, "feature_layer.3.", spec.emb, gen)
    return s


def _lora_linear(s: dict, prefix: str, x: torch.Tensor, alpha: torch.Tensor | None, scale: float) -> torch.Tensor:
    out = F.linear(x, s[prefix + "weight"], s.get(prefix + "bias"))
    down, up = s.get(prefix + "trainable_lora_down.weight"), s.get(prefix + "trainable_lora_up.weight")
    if prefix + "trainable_lora_down2.weight" in s:
        down2, up2 = s[prefix + "trainable_lora_down2.weight"], s[prefix + "trainable_lora_up2.weight"]
        out = out + scale * F.linear(F.linear((1 - alpha) * x, down), up)
        out = out + scale * F.linear(F.linear(alpha * x, down2), up2)
    elif down is not None:
        out = out + scale * F.linear(F.linear(x, down), up)
    return out


def _batch_norm(s: dict, prefix: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    mean, var = s[prefix + "running_mean"], s[prefix + "running_var"]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * s[prefix + "weight"].view(shape) + s[
        prefix + "bias"
    ].view(shape)


def swin_forward(s: dict, spec: SwinSpec, x: torch.Tensor, alpha: torch.Tensor | None, scale: float = 1.0):
    """The reference Swin's eval-mode embedding for images ``x`` and per-image ``alpha``."""
    b, e = x.shape[0], spec.embed
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=spec.patch)
    t = F.layer_norm(t.flatten(2).transpose(1, 2), (e,), s["patch_embed.norm.weight"], s["patch_embed.norm.bias"])
    if spec.ape:
        t = t + s["absolute_pos_embed"]
    res = spec.grid
    for i, depth in enumerate(spec.depths):
        dim, heads = e * 2**i, spec.heads[i]
        win = min(spec.window, res)
        n = res // win
        for j in range(depth):
            k = f"layers.{i}.blocks.{j}."
            shift = spec.window // 2 if (j % 2 == 1 and res > spec.window) else 0
            h = F.layer_norm(t, (dim,), s[k + "norm1.weight"], s[k + "norm1.bias"]).view(b, res, res, dim)
            if shift:
                h = torch.roll(h, (-shift, -shift), (1, 2))
            windows = h.view(b, n, win, n, win, dim).permute(0, 1, 3, 2, 4, 5).reshape(b * n * n, win * win, dim)
            a = None if alpha is None else alpha.repeat_interleave(n * n).view(-1, 1, 1)
            qkv = _lora_linear(s, k + "attn.qkv.", windows, a, scale)
            q, kk, v = qkv.reshape(-1, win * win, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            attn = (q * (dim // heads) ** -0.5) @ kk.transpose(-2, -1)
            table = s[k + "attn.relative_position_bias_table"]
            attn = attn + table[_relative_index(win).view(-1)].view(win * win, win * win, heads).permute(2, 0, 1)
            o = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, win * win, dim)
            o = F.linear(o, s[k + "attn.proj.weight"], s[k + "attn.proj.bias"])
            o = o.view(b, n, n, win, win, dim).permute(0, 1, 3, 2, 4, 5).reshape(b, res, res, dim)
            if shift:
                o = torch.roll(o, (shift, shift), (1, 2))
            t = t + o.reshape(b, res * res, dim)
            m = F.layer_norm(t, (dim,), s[k + "norm2.weight"], s[k + "norm2.bias"])
            m = F.linear(F.gelu(F.linear(m, s[k + "mlp.fc1.weight"], s[k + "mlp.fc1.bias"])), s[k + "mlp.fc2.weight"])
            t = t + m + s[k + "mlp.fc2.bias"]
        if i < len(spec.depths) - 1:
            g = t.view(b, res, res, dim)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            g = g.reshape(b, -1, 4 * dim)
            g = F.layer_norm(
                g, (4 * dim,), s[f"layers.{i}.downsample.norm.weight"], s[f"layers.{i}.downsample.norm.bias"]
            )
            t = F.linear(g, s[f"layers.{i}.downsample.reduction.weight"])
            res //= 2
    final = t.shape[-1]
    t = F.layer_norm(t, (final,), s["norm.weight"], s["norm.bias"]).reshape(b, -1)
    f = _batch_norm(s, "feature_layer.0.", t, 1e-5)
    f = _lora_linear(s, "feature_layer.2.", f, None, scale)
    return _batch_norm(s, "feature_layer.3.", f, 1e-5)


# ------------------------------------------------------------------------------------------------------- ViT


@dataclass
class ViTSpec:
    dim: int = 16
    depth: int = 2
    heads: int = 8
    patch: int = 9
    image: int = 36
    emb: int = 8
    mlp_ratio: int = 2
    norm: str = "ln"
    layout: str = "pretrained"  # "pretrained" | "lora" (vit.py) | "quality_gated" (vit_iqa.py)
    rank: int = 2

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2


def _vit_norm(s: dict, prefix: str, spec: ViTSpec, gen: torch.Generator) -> None:
    if spec.norm == "ln":
        _ln(s, prefix, spec.dim, gen)
    else:
        _bn(s, prefix + "bn.", spec.tokens, gen)


def vit_state_dict(spec: ViTSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    d, n = spec.dim, spec.tokens
    s["patch_embed.proj.weight"] = torch.randn(d, 3, spec.patch, spec.patch, generator=gen) * 0.1
    s["patch_embed.proj.bias"] = torch.randn(d, generator=gen) * 0.1
    s["pos_embed"] = torch.randn(1, n, d, generator=gen) * 0.3
    s["mask_token"] = torch.randn(1, 1, d, generator=gen)
    lora = spec.layout != "pretrained"
    for j in range(spec.depth):
        norm = functools.partial(_vit_norm, s, spec=spec, gen=gen)
        _block(s, f"blocks.{j}.", d, spec, gen, lora, norm, qkv_bias=False)
    _vit_norm(s, "norm.", spec, gen)
    _linear(s, "feature.0.", d, d * n, gen, bias=False)
    _bn(s, "feature.1.", d, gen)
    _linear(s, "feature.2.", spec.emb, d, gen, bias=False)
    _bn(s, "feature.3.", spec.emb, gen)
    if lora:
        _lora(s, "feature.0.", d, d * n, spec.rank, gen, two=False)
        _lora(s, "feature.2.", spec.emb, d, spec.rank, gen, two=False)
    return s


def _vit_apply_norm(s: dict, prefix: str, spec: ViTSpec, t: torch.Tensor) -> torch.Tensor:
    if spec.norm == "ln":
        return F.layer_norm(t, (spec.dim,), s[prefix + "weight"], s[prefix + "bias"])
    return _batch_norm(s, prefix + "bn.", t, 1e-5)  # BatchNorm1d over token positions: [B, tokens, dim]


def vit_forward(s: dict, spec: ViTSpec, x: torch.Tensor, alpha: torch.Tensor | None, scale: float = 1.0):
    """arcface_torch's ViT eval-mode embedding (with the PETALface repository's LoRA variants)."""
    b, d, h = x.shape[0], spec.dim, spec.heads
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=spec.patch)
    t = t.flatten(2).transpose(1, 2) + s["pos_embed"]
    a = None if alpha is None else alpha.view(-1, 1, 1)
    for j in range(spec.depth):
        k = f"blocks.{j}."
        qkv = _lora_linear(s, k + "attn.qkv.", _vit_apply_norm(s, k + "norm1.", spec, t), a, scale)
        q, kk, v = qkv.reshape(b, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        o = (((q @ kk.transpose(-2, -1)) * (d // h) ** -0.5).softmax(-1) @ v).transpose(1, 2).reshape(b, -1, d)
        t = t + F.linear(o, s[k + "attn.proj.weight"], s[k + "attn.proj.bias"])
        m = _vit_apply_norm(s, k + "norm2.", spec, t)
        m = F.relu6(F.linear(m, s[k + "mlp.fc1.weight"], s[k + "mlp.fc1.bias"]))
        t = t + F.linear(m, s[k + "mlp.fc2.weight"], s[k + "mlp.fc2.bias"])
    f = _vit_apply_norm(s, "norm.", spec, t).reshape(b, -1)
    f = _batch_norm(s, "feature.1.", _lora_linear(s, "feature.0.", f, None, scale), 2e-5)
    return _batch_norm(s, "feature.3.", _lora_linear(s, "feature.2.", f, None, scale), 2e-5)
