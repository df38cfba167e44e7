"""Converting insightface IResNet checkpoints (arcface_torch ``backbone.pth``, PETALface's IResNet LoRA runs) into a
face-IResNet folder and, for LoRA runs, a plain PEFT LoRA adapter.

:class:`~petal_peft.models.FaceIResNetModel` keeps insightface's module names, so the base weights load key for
key. The architecture is read from the shapes: stem width from ``conv1.weight``, stage widths from each stage's
first block, the depth (18 / 34 / 50 / 100 / 200) from the number of blocks per stage, the input size from the
embedding layer's ``fc.weight`` (7 x 7 x 512 inputs at 112 px).

PETALface's IResNet with LoRA wraps every convolution (stem, both block convolutions, the 1 x 1 shortcut) as
``conv(x) + s * up(down(x))``, ``down`` a convolution with the layer's kernel, stride and padding and r outputs,
``up`` a 1 x 1 convolution, and the embedding layer ``fc`` as ``fc(x) + s * up(down(x))``. These are exactly PEFT's
own LoRA layers for ``nn.Conv2d`` and ``nn.Linear`` (``lora_A`` = down, ``lora_B`` = up, ``lora_alpha / r`` = s), so
they are written as a plain PEFT ``LoraConfig`` adapter; there is no quality gate in those checkpoints.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .adapter import BranchFactors, ModuleFactors
from .common import CheckpointFormatError, ConversionResult, Stopwatch, check_layout, read_state_dict
from .output import (
    ConvertedModel,
    OutputSettings,
    base_card,
    load_mapped_weights,
    require_tensor,
    write_conversion,
)

__all__ = ["convert_insightface_iresnet", "infer_iresnet_architecture", "is_iresnet_state_dict"]

WHAT = "insightface IResNet checkpoint (arcface_torch backbone.pth)"
ARCFACE_IMAGE_SIZE = 112
_STAGE_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_LORA = ".trainable_lora_"
#: every convolution PETALface's IResNet wraps with LoRA, and its embedding layer
_LORA_TARGETS = r"(.*\.)?(conv1|layer\d+\.\d+\.(conv1|conv2|downsample\.0)|fc)"


def is_iresnet_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict has insightface IResNet key names (its stem, first block and embedding layer)."""
    return all(key in state for key in ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"))


def _require(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    return require_tensor(state, key, source, WHAT, ("layers.0.blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.weight"))


def _depth_name(depths: list[int]) -> int:
    from ..models import IRESNET_DEPTHS

    for depth, blocks in IRESNET_DEPTHS.items():
        if list(blocks) == depths:
            return depth
    known = ", ".join(f"{depth} = {list(blocks)}" for depth, blocks in IRESNET_DEPTHS.items())
    raise CheckpointFormatError(f"unknown IResNet depth: blocks per stage {depths} (insightface's: {known}).")


def infer_iresnet_architecture(
    state: Mapping[str, torch.Tensor], source: str = "checkpoint", image_size: int | None = None
) -> dict[str, Any]:
    """The IResNet hyper-parameters a state dict implies (widths, blocks per stage, input size, LoRA rank).

    Refuses a number of blocks per stage that is none of insightface's IResNet-18 / 34 / 50 / 100 / 200.
    """
    stem = _require(state, "conv1.weight", source)
    _require(state, "layer1.0.conv1.weight", source)
    fc = _require(state, "fc.weight", source)
    if stem.dim() != 4 or fc.dim() != 2:
        raise CheckpointFormatError(
            f"{source}: conv1.weight has shape {tuple(stem.shape)} and fc.weight {tuple(fc.shape)}; expected a "
            "[channels, 3, 3, 3] convolution and an [embedding, features] linear layer."
        )
    blocks: dict[int, set[int]] = {}
    for key in state:
        if match := _STAGE_BLOCK.match(key):
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)):
        raise CheckpointFormatError(
            f"{source}: stages {', '.join(f'layer{s}' for s in stages)} are not layer1..layerN."
        )
    depths = []
    for stage in stages:
        if blocks[stage] != set(range(len(blocks[stage]))):
            raise CheckpointFormatError(f"{source}: layer{stage} has blocks {sorted(blocks[stage])}, expected 0..n-1.")
        depths.append(len(blocks[stage]))
    try:
        depth = _depth_name(depths)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{source}: {err}") from None
    widths = [int(_require(state, f"layer{stage}.0.conv1.weight", source).shape[0]) for stage in stages]
    side = math.isqrt(int(fc.shape[1]) // widths[-1]) if int(fc.shape[1]) % widths[-1] == 0 else 0
    if side == 0 or side * side * widths[-1] != fc.shape[1]:
        raise CheckpointFormatError(
            f"{source}: fc.weight has {int(fc.shape[1])} inputs, not a square feature map of {widths[-1]} channels."
        )
    size = _image_size(side, len(stages), image_size, source)
    lora_keys = sorted(key for key in state if _LORA in key)
    arch: dict[str, Any] = {
        "model_type": "face_iresnet",
        "num_layers": depth,
        "image_size": size,
        "num_channels": int(stem.shape[1]),
        "stem_channels": int(stem.shape[0]),
        "hidden_sizes": widths,
        "depths": depths,
        "embedding_size": int(fc.shape[0]),
        "layout": "lora" if lora_keys else "pretrained",
    }
    if lora_keys:  # PETALface uses one rank throughout; the layout check names any factor that differs
        downs = [key for key in lora_keys if "lora_down" in key]
        first = "conv1.trainable_lora_down.weight" if "conv1.trainable_lora_down.weight" in state else None
        key = first or (downs[0] if downs else lora_keys[0])
        arch["lora_rank"] = int(state[key].shape[0] if "lora_down" in key else state[key].shape[1])
    return arch


def _image_size(side: int, stages: int, image_size: int | None, source: str) -> int:
    """112 px (arcface_torch's) when it gives the checkpoint's feature map, else the largest size that does."""

    def feature_side(size: int) -> int:
        for _ in range(stages):
            size = (size + 1) // 2
        return size

    if image_size is not None:
        if feature_side(int(image_size)) != side:
            raise CheckpointFormatError(
                f"{source}: image_size={image_size} gives a {feature_side(int(image_size))} x "
                f"{feature_side(int(image_size))} feature map, but fc.weight expects {side} x {side}."
            )
        return int(image_size)
    return ARCFACE_IMAGE_SIZE if feature_side(ARCFACE_IMAGE_SIZE) == side else side * 2**stages


def _conv_names(arch: Mapping[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    """Every convolution's module name -> (out, in, kernel, stride)."""
    convs = {"conv1": (arch["stem_channels"], arch["num_channels"], 3, 1)}
    in_channels = arch["stem_channels"]
    for stage, (width, depth) in enumerate(zip(arch["hidden_sizes"], arch["depths"]), start=1):
        for block in range(depth):
            k = f"layer{stage}.{block}."
            block_in = in_channels if block == 0 else width
            convs[k + "conv1"] = (width, block_in, 3, 1)
            convs[k + "conv2"] = (width, width, 3, 2 if block == 0 else 1)
            if block == 0:
                convs[k + "downsample.0"] = (width, block_in, 1, 2)
        in_channels = width
    return convs


def _bn_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {prefix + name: (width,) for name in ("weight", "bias", "running_mean")}
    shapes[prefix + "running_var"] = (width,)
    shapes[prefix + "num_batches_tracked"] = ()
    return shapes


def reference_shapes(arch: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key (and its shape) insightface's IResNet with ``arch`` has (with LoRA: PETALface's)."""
    rank = arch.get("lora_rank")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (out_channels, in_channels, kernel, _) in _conv_names(arch).items():
        shapes[name + ".weight"] = (out_channels, in_channels, kernel, kernel)
        if rank is not None:
            shapes[name + ".trainable_lora_down.weight"] = (rank, in_channels, kernel, kernel)
            shapes[name + ".trainable_lora_up.weight"] = (out_channels, rank, 1, 1)
    stem = arch["stem_channels"]
    shapes.update(_bn_shapes("bn1.", stem))
    shapes["prelu.weight"] = (stem,)
    in_channels = stem
    for stage, (width, depth) in enumerate(zip(arch["hidden_sizes"], arch["depths"]), start=1):
        for block in range(depth):
            k = f"layer{stage}.{block}."
            shapes.update(_bn_shapes(k + "bn1.", in_channels if block == 0 else width))
            shapes.update(_bn_shapes(k + "bn2.", width))
            shapes.update(_bn_shapes(k + "bn3.", width))
            shapes[k + "prelu.weight"] = (width,)
            if block == 0:
                shapes.update(_bn_shapes(k + "downsample.1.", width))
        in_channels = width
    shapes.update(_bn_shapes("bn2.", in_channels))
    side = _feature_side(arch)
    features, emb = in_channels * side * side, arch["embedding_size"]
    shapes["fc.weight"] = (emb, features)
    shapes["fc.bias"] = (emb,)
    if rank is not None:
        shapes["fc.trainable_lora_down.weight"] = (rank, features)
        shapes["fc.trainable_lora_up.weight"] = (emb, rank)
    shapes.update(_bn_shapes("features.", emb))
    return shapes


def _feature_side(arch: Mapping[str, Any]) -> int:
    side = arch["image_size"]
    for _ in arch["depths"]:
        side = (side + 1) // 2
    return side


def map_lora_factors(state: Mapping[str, torch.Tensor], arch: Mapping[str, Any]) -> dict[str, ModuleFactors]:
    """FaceIResNetModel module name -> the single LoRA branch of that convolution or linear layer."""
    if "lora_rank" not in arch:
        return {}
    names = [*_conv_names(arch), "fc"]
    return {name: ModuleFactors(BranchFactors.of_reference(state, name)) for name in names}


def _arch_text(arch: Mapping[str, Any]) -> str:
    return f"IResNet-{arch['num_layers']}, widths {arch['hidden_sizes']}, {arch['image_size']} px" + (
        f", LoRA rank {arch['lora_rank']}" if "lora_rank" in arch else ""
    )


def convert_iresnet_state(
    state: dict[str, torch.Tensor],
    out_dir: str | os.PathLike,
    *,
    source: str,
    lora_scale: float = 1.0,
    image_size: int | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    clock: Stopwatch | None = None,
) -> ConversionResult:
    """Convert an already read IResNet state dict (the shared step of both public converters)."""
    from ..models import FaceIResNetConfig, FaceIResNetModel

    # a single branch has no quality gate: the metric does not enter the adapter
    settings = OutputSettings(out_dir, source, "brisque", None, lora_scale, dtype, overwrite, clock or Stopwatch())
    arch = infer_iresnet_architecture(state, source, image_size)
    check_layout(state, reference_shapes(arch), (), source, _arch_text(arch))
    config_keys = ("image_size", "num_channels", "stem_channels", "hidden_sizes", "depths", "embedding_size")
    model = FaceIResNetModel(FaceIResNetConfig(**{key: arch[key] for key in config_keys}))
    load_mapped_weights(model, {key: value for key, value in state.items() if _LORA not in key})
    factors = map_lora_factors(state, arch)
    notes = []
    if factors:
        notes.append("LoRA on every convolution (stem and shortcuts included) and on fc, as PETALface's IResNet")
    del state
    what = "An insightface IResNet face-recognition model (`model_type: face_iresnet`)"
    card = base_card(f"Face IResNet-{arch['num_layers']} converted from `{source}`", what, arch["image_size"])
    converted = ConvertedModel(model, arch, factors, card, _LORA_TARGETS, notes)
    return write_conversion(converted, settings)


def convert_insightface_iresnet(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    lora_scale: float = 1.0,
    image_size: int | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an insightface IResNet checkpoint into ``out_dir/base`` (a face-IResNet folder).

    Reads arcface_torch's ``backbone.pth`` (a plain state dict, DDP's ``module.`` prefix tolerated) with
    ``torch.load(weights_only=True)`` only; the depth (18, 34, 50, 100 or 200) and widths come from the tensor
    shapes. A PETALface IResNet checkpoint with LoRA weights also gets ``out_dir/adapter``, a plain PEFT LoRA
    adapter (see :func:`~petal_peft.convert.convert_petalface_checkpoint`).

    Args:
        path: the checkpoint file.
        out_dir: the output folder (``base/`` and, with LoRA weights, ``adapter/``).
        lora_scale: the LoRA runs' ``--lora_scale`` (the adapter's ``lora_alpha`` is ``lora_scale * r``).
        image_size: the input size in px (default: 112 when it gives the checkpoint's feature map).
        dtype: cast the weights (``"float16"``, ``"bfloat16"``, ``"float32"``; default: keep).
        overwrite: replace a non-empty ``out_dir``.
        progress: print what is read.

    Returns:
        A :class:`~petal_peft.convert.ConversionResult`.
    """
    clock = Stopwatch()
    state = read_state_dict(path, WHAT, progress=progress)
    return convert_iresnet_state(
        state,
        out_dir,
        source=str(path),
        lora_scale=lora_scale,
        image_size=image_size,
        dtype=dtype,
        overwrite=overwrite,
        clock=clock,
    )
