"""Converting an insightface arcface_torch ViT checkpoint into a face-ViT folder (and a PEFT adapter).

arcface_torch's ``VisionTransformer`` (vit_t / vit_s / vit_b ...) has no CLS token, a fused ``attn.qkv`` without
bias, and a ``feature`` head (Linear -> BatchNorm1d -> Linear -> BatchNorm1d) on the flattened tokens. The
PETALface repository's variants add LoRA: ``vit.py`` one branch on every ``qkv`` and on ``feature.0`` /
``feature.2``; ``vit_iqa.py`` two quality-mixed branches on ``qkv`` and one un-gated branch on ``feature.0`` /
``feature.2``. They convert with the same rules as the Swin (see :mod:`petal_peft.convert.petalface`).

The number of attention heads cannot be read from the weights (a fused qkv is [3 d, d] for any head count); every
arcface_torch preset uses 8, the default here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .adapter import BranchFactors, ModuleFactors
from .common import CheckpointFormatError, ConversionResult, check_layout, read_state_dict
from .output import (
    ConvertedModel,
    OutputSettings,
    base_card,
    load_mapped_weights,
    patch_kernel,
    require_tensor,
    target_modules_regex,
    write_conversion,
)
from .petalface import qkv_module_factors

__all__ = ["convert_insightface_vit", "infer_vit_architecture"]

WHAT = "insightface arcface_torch ViT checkpoint"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
ARCFACE_IMAGE_SIZE = 112
_HEAD_LINEARS = {"feature.0": "embedding_head.projection", "feature.2": "embedding_head.output"}


def _require(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    return require_tensor(state, key, source, WHAT, ("layers.0.blocks.0.attn.qkv.weight",))


def infer_vit_architecture(
    state: Mapping[str, torch.Tensor], source: str = "checkpoint", num_attention_heads: int = 8
) -> dict[str, Any]:
    """The ViT hyper-parameters a state dict implies (width, depth, patch, image size, norm kind, LoRA layout)."""
    proj = _require(state, "patch_embed.proj.weight", source)
    pos = _require(state, "pos_embed", source)
    _require(state, "blocks.0.attn.qkv.weight", source)
    _require(state, "feature.0.weight", source)
    dim, channels, patch = patch_kernel(proj, source)
    tokens = int(pos.shape[1]) if pos.dim() == 3 else -1
    grid = math.isqrt(max(tokens, 0))
    if grid * grid != tokens or grid == 0:
        raise CheckpointFormatError(f"{source}: pos_embed has shape {tuple(pos.shape)}, expected [1, grid**2, dim].")
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if blocks != set(range(len(blocks))):
        raise CheckpointFormatError(f"{source}: blocks {sorted(blocks)} are not numbered 0..n-1.")
    if dim % num_attention_heads:
        raise CheckpointFormatError(
            f"{source}: width {dim} is not divisible by num_attention_heads={num_attention_heads}."
        )
    norm = "bn" if "norm.bn.weight" in state else "ln"
    qkv_down2 = "blocks.0.attn.qkv.trainable_lora_down2.weight" in state
    qkv_down = "blocks.0.attn.qkv.trainable_lora_down.weight" in state
    head_lora = [name for name in _HEAD_LINEARS if f"{name}.trainable_lora_down.weight" in state]
    layout = "quality_gated" if qkv_down2 else "lora" if (qkv_down or head_lora) else "pretrained"
    fc1 = _require(state, "blocks.0.mlp.fc1.weight", source)
    arch: dict[str, Any] = {
        "model_type": "face_vit",
        # arcface_torch feeds 112 px faces and its strided patch projection ignores the pixels past the last whole
        # patch (12 x 9 = 108 of 112): keep 112 when it gives the same grid
        "image_size": ARCFACE_IMAGE_SIZE if ARCFACE_IMAGE_SIZE // patch == grid else grid * patch,
        "patch_size": patch,
        "num_channels": channels,
        "hidden_size": dim,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": int(num_attention_heads),
        "mlp_ratio": float(fc1.shape[0]) / dim,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "norm_layer": norm,
        "embedding_size": int(_require(state, "feature.2.weight", source).shape[0]),
        "layout": layout,
    }
    if qkv_down or qkv_down2:
        arch["lora_rank"] = int(state["blocks.0.attn.qkv.trainable_lora_down.weight"].shape[0])
    for name in head_lora:
        arch[f"{name.replace('.', '_')}_lora_rank"] = int(state[f"{name}.trainable_lora_down.weight"].shape[0])
    return arch


def _norm_shapes(prefix: str, norm: str, dim: int, tokens: int) -> dict[str, tuple[int, ...]]:
    if norm == "ln":
        return {prefix + "weight": (dim,), prefix + "bias": (dim,)}
    shapes = {prefix + f"bn.{name}": (tokens,) for name in ("weight", "bias", "running_mean", "running_var")}
    shapes[prefix + "bn.num_batches_tracked"] = ()
    return shapes


def reference_shapes(arch: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Every key (and its shape) arcface_torch's model with ``arch`` has, and the training-only keys we drop."""
    d, p, c = arch["hidden_size"], arch["patch_size"], arch["num_channels"]
    tokens = (arch["image_size"] // p) ** 2
    hidden = int(d * arch["mlp_ratio"])
    norm = arch["norm_layer"]
    rank = arch.get("lora_rank")
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (d, c, p, p),
        "patch_embed.proj.bias": (d,),
        "pos_embed": (1, tokens, d),
    }
    for block in range(arch["num_hidden_layers"]):
        k = f"blocks.{block}."
        shapes.update(_norm_shapes(k + "norm1.", norm, d, tokens))
        shapes.update(_norm_shapes(k + "norm2.", norm, d, tokens))
        shapes.update(
            {
                k + "attn.qkv.weight": (3 * d, d),
                k + "attn.proj.weight": (d, d),
                k + "attn.proj.bias": (d,),
                k + "mlp.fc1.weight": (hidden, d),
                k + "mlp.fc1.bias": (hidden,),
                k + "mlp.fc2.weight": (d, hidden),
                k + "mlp.fc2.bias": (d,),
            }
        )
        if arch["qkv_bias"]:
            shapes[k + "attn.qkv.bias"] = (3 * d,)
        if rank is not None:
            for suffix in ("", "2") if arch["layout"] == "quality_gated" else ("",):
                shapes[k + f"attn.qkv.trainable_lora_down{suffix}.weight"] = (rank, d)
                shapes[k + f"attn.qkv.trainable_lora_up{suffix}.weight"] = (3 * d, rank)
    shapes.update(_norm_shapes("norm.", norm, d, tokens))
    emb = arch["embedding_size"]
    shapes["feature.0.weight"] = (d, d * tokens)
    shapes["feature.2.weight"] = (emb, d)
    for index, width in ((1, d), (3, emb)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"feature.{index}.{name}"] = (width,)
        shapes[f"feature.{index}.num_batches_tracked"] = ()
    for name, (out_features, in_features) in (("feature.0", (d, d * tokens)), ("feature.2", (emb, d))):
        head_rank = arch.get(f"{name.replace('.', '_')}_lora_rank")
        if head_rank is not None:
            shapes[f"{name}.trainable_lora_down.weight"] = (head_rank, in_features)
            shapes[f"{name}.trainable_lora_up.weight"] = (out_features, head_rank)
    return shapes, ["mask_token"]


def map_base_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """arcface_torch's non-LoRA tensors under FaceViTModel's names (fused qkv split into q/k/v)."""
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if "trainable_lora" in key or key == "mask_token":
            continue
        if key == "pos_embed":
            mapped["embeddings.position_embeddings"] = tensor
        elif key.startswith("patch_embed.proj."):
            mapped["embeddings.projection." + key.removeprefix("patch_embed.proj.")] = tensor
        elif key.startswith("feature."):
            index, param = key.removeprefix("feature.").split(".", 1)
            name = {"0": "projection", "1": "projection_norm", "2": "output", "3": "output_norm"}[index]
            mapped[f"embedding_head.{name}.{param}"] = tensor
        elif key.startswith("norm."):
            mapped["norm." + key.removeprefix("norm.").removeprefix("bn.")] = tensor
        else:
            block = _BLOCK.match(key)
            if block is None:  # pragma: no cover - check_layout already refused unknown keys
                raise CheckpointFormatError(f"no mapping for {key!r}.")
            prefix, rest = f"encoder.layers.{block.group(1)}.", key[block.end() :]
            if rest.startswith("attn.qkv."):
                param = rest.removeprefix("attn.qkv.")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    mapped[f"{prefix}attention.{name}.{param}"] = part.clone()
            elif rest.startswith("attn.proj."):
                mapped[prefix + "attention.o_proj." + rest.removeprefix("attn.proj.")] = tensor
            elif rest.startswith(("norm1.", "norm2.")):
                mapped[prefix + rest.replace(".bn.", ".", 1)] = tensor
            else:
                mapped[prefix + rest] = tensor
    return mapped


def map_lora_factors(state: Mapping[str, torch.Tensor], arch: Mapping[str, Any], iqa: str) -> dict[str, ModuleFactors]:
    """FaceViTModel module name -> LoRA factors (high-quality branch = the reference's branch for good images)."""
    factors: dict[str, ModuleFactors] = {}
    dual = arch["layout"] == "quality_gated"
    if "lora_rank" in arch:
        for block in range(arch["num_hidden_layers"]):
            ours = f"encoder.layers.{block}.attention."
            factors.update(qkv_module_factors(state, f"blocks.{block}.attn.qkv", ours, dual, iqa))
    for name, ours in _HEAD_LINEARS.items():
        if f"{name.replace('.', '_')}_lora_rank" in arch:
            branch = BranchFactors.of_reference(state, name)
            factors[ours] = ModuleFactors(branch, branch if dual else None)  # un-gated: same in both branches
    return factors


def _target_regex(factors: Mapping[str, ModuleFactors]) -> str:
    parts = []
    if any(".attention." in name for name in factors):
        parts.append(r"encoder\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj)")
    heads = sorted(name.removeprefix("embedding_head.") for name in factors if name.startswith("embedding_head."))
    if heads:
        parts.append(r"embedding_head\.(" + "|".join(heads) + ")")
    return target_modules_regex(parts)


def convert_insightface_vit(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    iqa: str = "brisque",
    *,
    num_attention_heads: int = 8,
    image_size: int | None = None,
    lora_scale: float = 1.0,
    dtype: str | torch.dtype | None = None,
    gate_threshold: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an arcface_torch ViT checkpoint into ``out_dir/base`` (a face-ViT folder) and, when it holds LoRA
    weights (the PETALface repository's ``vit.py`` / ``vit_iqa.py`` with ``use_lora``), ``out_dir/adapter``.

    Args:
        path: the checkpoint (``backbone.pth`` or the PETALface repository's ``model.pt``).
        out_dir: a new or empty folder (or any folder with ``overwrite``).
        iqa: the image-quality metric a two-branch checkpoint was trained with (``"brisque"`` or ``"cnniqa"``).
        num_attention_heads: not stored in the weights; 8 for every arcface_torch preset.
        image_size: the input size in px (default: 112, arcface_torch's, when it gives the checkpoint's patch
            grid, else grid x patch).
        lora_scale: the reference's ``--lora_scale``.
        dtype: cast the weights (``"float16"``, ...; default: keep).
        gate_threshold: the IQA threshold of a two-branch checkpoint (see
            :func:`~petal_peft.convert.convert_petalface_checkpoint`).
        overwrite: replace what ``out_dir`` holds (only once the new folder is complete).
        progress: show the reading progress.

    Returns:
        A :class:`ConversionResult`: the two folders, the layout, the architecture, notes and the time taken.
    """
    from ..models import FaceViTConfig, FaceViTModel

    settings = OutputSettings(out_dir, str(path), iqa, gate_threshold, lora_scale, dtype, overwrite)
    source, iqa = settings.source, settings.iqa
    state = read_state_dict(path, WHAT, progress=progress)
    arch = infer_vit_architecture(state, source, num_attention_heads)
    if image_size is not None:
        size = int(image_size)
        if size // arch["patch_size"] != arch["image_size"] // arch["patch_size"]:
            raise ValueError(
                f"image_size={size} gives a {size // arch['patch_size']}-patch grid, but the checkpoint's pos_embed "
                f"has {arch['image_size'] // arch['patch_size']} patches per side."
            )
        arch["image_size"] = size
    shapes, ignorable = reference_shapes(arch)
    check_layout(state, shapes, ignorable, source, f"width {arch['hidden_size']}, depth {arch['num_hidden_layers']}")

    skip = {"model_type", "layout", "lora_rank", "feature_0_lora_rank", "feature_2_lora_rank"}
    model = FaceViTModel(FaceViTConfig(**{k: v for k, v in arch.items() if k not in skip}))
    load_mapped_weights(model, map_base_weights(state))
    factors = map_lora_factors(state, arch, iqa)
    notes = ["mask_token (training-time token masking) is not converted"] if "mask_token" in state else []
    del state
    what = "An insightface arcface_torch face-recognition ViT (`model_type: face_vit`, no CLS token)"
    card = base_card(f"Face ViT converted from `{source}`", what, arch["image_size"])
    converted = ConvertedModel(model, arch, factors, card, _target_regex(factors), notes)
    return write_conversion(converted, settings)
