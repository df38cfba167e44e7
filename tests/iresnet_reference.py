"""insightface IResNet state dicts (plain, and PETALface's LoRA variant) and an independent functional forward.

Written for the tests from a description of the layout (not from petal-peft's model code, nor copied from the
reference): a 3 x 3 stem ``conv1`` -> ``bn1`` -> ``prelu``; stages ``layer{s}`` of blocks
``bn1 -> conv1 (3 x 3) -> bn2 -> prelu -> conv2 (3 x 3, the block's stride) -> bn3`` plus the identity or, in each
stage's first block, ``downsample.0`` (1 x 1 strided conv) -> ``downsample.1`` (BN); the head ``bn2`` -> flatten ->
``fc`` -> ``features`` (BN1d). Every BN has eps 1e-5. With LoRA every convolution adds
``s * up(down(x))`` (down: the conv's kernel / stride / padding with r outputs; up: 1 x 1) and ``fc`` adds
``s * up(down(x))`` (linear factors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-5


@dataclass
class IResNetSpec:
    depths: tuple[int, ...] = (2, 2, 2, 2)  # iresnet18
    widths: tuple[int, ...] = (4, 8, 8, 16)
    stem: int = 4
    image: int = 16
    emb: int = 8
    rank: int | None = None  # PETALface LoRA rank (None: a plain arcface_torch backbone)
    scale: float = 1.0

    @property
    def side(self) -> int:
        side = self.image
        for _ in self.depths:
            side = (side + 1) // 2
        return side


def _convs(spec: IResNetSpec) -> dict[str, tuple[int, int, int, int]]:
    """Module name -> (out, in, kernel, stride) of every convolution."""
    convs = {"conv1": (spec.stem, 3, 3, 1)}
    channels = spec.stem
    for stage, (width, depth) in enumerate(zip(spec.widths, spec.depths), start=1):
        for block in range(depth):
            k, block_in = f"layer{stage}.{block}.", channels if block == 0 else width
            convs[k + "conv1"] = (width, block_in, 3, 1)
            convs[k + "conv2"] = (width, width, 3, 2 if block == 0 else 1)
            if block == 0:
                convs[k + "downsample.0"] = (width, block_in, 1, 2)
        channels = width
    return convs


def _bn(state: dict, prefix: str, width: int, gen: torch.Generator, weight: bool = True) -> None:
    state[prefix + "weight"] = torch.rand(width, generator=gen) + 0.5 if weight else torch.ones(width)
    state[prefix + "bias"] = torch.randn(width, generator=gen) * 0.1
    state[prefix + "running_mean"] = torch.randn(width, generator=gen) * 0.1
    state[prefix + "running_var"] = torch.rand(width, generator=gen) + 0.5
    state[prefix + "num_batches_tracked"] = torch.tensor(11)


def iresnet_state_dict(spec: IResNetSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    for name, (out_c, in_c, k, _) in _convs(spec).items():
        s[name + ".weight"] = torch.randn(out_c, in_c, k, k, generator=gen) / (in_c * k * k) ** 0.5
        if spec.rank is not None:
            s[name + ".trainable_lora_down.weight"] = torch.randn(spec.rank, in_c, k, k, generator=gen) / spec.rank
            s[name + ".trainable_lora_up.weight"] = torch.randn(out_c, spec.rank, 1, 1, generator=gen) * 0.3
    _bn(s, "bn1.", spec.stem, gen)
    s["prelu.weight"] = torch.rand(spec.stem, generator=gen) * 0.5
    channels = spec.stem
    for stage, (width, depth) in enumerate(zip(spec.widths, spec.depths), start=1):
        for block in range(depth):
            k = f"layer{stage}.{block}."
            _bn(s, k + "bn1.", channels if block == 0 else width, gen)
            _bn(s, k + "bn2.", width, gen)
            _bn(s, k + "bn3.", width, gen)
            s[k + "prelu.weight"] = torch.rand(width, generator=gen) * 0.5
            if block == 0:
                _bn(s, k + "downsample.1.", width, gen)
        channels = width
    _bn(s, "bn2.", channels, gen)
    features = channels * spec.side**2
    s["fc.weight"] = torch.randn(spec.emb, features, generator=gen) / features**0.5
    s["fc.bias"] = torch.randn(spec.emb, generator=gen) * 0.1
    if spec.rank is not None:
        s["fc.trainable_lora_down.weight"] = torch.randn(spec.rank, features, generator=gen) / spec.rank
        s["fc.trainable_lora_up.weight"] = torch.randn(spec.emb, spec.rank, generator=gen) * 0.3
    _bn(s, "features.", spec.emb, gen, weight=False)
    return s


def _batch_norm(s: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = s[prefix + "running_mean"].view(shape), s[prefix + "running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + EPS) * s[prefix + "weight"].view(shape) + s[prefix + "bias"].view(shape)


def _conv(s: dict, spec: IResNetSpec, name: str, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    out = F.conv2d(x, s[name + ".weight"], stride=stride, padding=padding)
    if spec.rank is not None:
        hidden = F.conv2d(x, s[name + ".trainable_lora_down.weight"], stride=stride, padding=padding)
        out = out + spec.scale * F.conv2d(hidden, s[name + ".trainable_lora_up.weight"])
    return out


def _prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    slope = weight.view(1, -1, 1, 1)
    return torch.where(x >= 0, x, slope * x)


def iresnet_forward(s: dict, spec: IResNetSpec, x: torch.Tensor) -> torch.Tensor:
    """The embedding in eval mode (BN with running statistics, no dropout), in float64."""
    s = {k: v.double() if v.is_floating_point() else v for k, v in s.items()}
    x = _prelu(_batch_norm(s, "bn1.", _conv(s, spec, "conv1", x.double(), 1, 1)), s["prelu.weight"])
    for stage, depth in enumerate(spec.depths, start=1):
        for block in range(depth):
            k, stride = f"layer{stage}.{block}.", 2 if block == 0 else 1
            out = _conv(s, spec, k + "conv1", _batch_norm(s, k + "bn1.", x), 1, 1)
            out = _prelu(_batch_norm(s, k + "bn2.", out), s[k + "prelu.weight"])
            out = _batch_norm(s, k + "bn3.", _conv(s, spec, k + "conv2", out, stride, 1))
            if block == 0:
                x = _batch_norm(s, k + "downsample.1.", _conv(s, spec, k + "downsample.0", x, 2, 0))
            x = out + x
    flat = _batch_norm(s, "bn2.", x).flatten(1)
    emb = flat @ s["fc.weight"].T + s["fc.bias"]
    if spec.rank is not None:
        emb = emb + spec.scale * (flat @ s["fc.trainable_lora_down.weight"].T) @ s["fc.trainable_lora_up.weight"].T
    return _batch_norm(s, "features.", emb)
