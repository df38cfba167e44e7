"""Converting a released PETALface Swin checkpoint (``model.pt``) into a face-Swin folder and a PEFT adapter.

The reference's network (``swin_256new`` / ``swin_256new_iqa``) is a Microsoft-style Swin with a fused ``qkv``
projection and an embedding head ``feature_layer`` on the flattened final tokens. Its fine-tuned checkpoints add
LoRA factors inside those layers: two branches on every ``attn.qkv`` (the PETALface layer, mixed per image by
``alpha``) and one un-gated branch on ``feature_layer.2``. The conversion is exact:

* ``qkv`` [3 d, d] splits by rows into query / key / value; a branch's ``down`` [r, d] is shared by the three, its
  ``up`` [3 d, r] splits by rows, so ``up (down x)`` is unchanged row for row;
* the reference feeds branch 1 with ``(1 - alpha) x`` and branch 2 with ``alpha x``. Our layer feeds its
  high-quality branch with ``q x`` and its low-quality branch with ``(1 - q) x``. With BRISQUE (lower is better)
  branch 1 is the high-quality one and ``q = 1 - alpha``; with CNNIQA (higher is better) branch 2 is, and
  ``q = alpha``. ``lora_scale`` s becomes ``lora_alpha = s * r``;
* the head's single un-gated branch is stored in BOTH branches of the adapter's ``embedding_head.projection``:
  ``s B A (q x) + s B A ((1 - q) x) = s B A x`` for every real q, so it stays un-gated in every gate mode (bounded
  or not) and is still trainable; disabling the adapter still gives the pretrained model.

PETALface's IResNet checkpoints (single-branch LoRA on every convolution and on ``fc``) are recognised by their key
names and converted by :mod:`petal_peft.convert.iresnet` into a face-IResNet folder and a plain PEFT LoRA adapter.
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
from .iresnet import convert_iresnet_state, is_iresnet_state_dict
from .output import (
    IQA_HIGHER_IS_BETTER,
    ConvertedModel,
    OutputSettings,
    base_card,
    load_mapped_weights,
    missing_key_error,
    patch_kernel,
    target_modules_regex,
    write_conversion,
)

__all__ = [
    "IQA_HIGHER_IS_BETTER",
    "convert_petalface_checkpoint",
    "infer_swin_architecture",
    "to_petalface_state_dict",
]

WHAT = "PETALface Swin checkpoint (model.pt)"
_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_STAGE = re.compile(r"^layers\.(\d+)\.")


def _require(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        if any(k.startswith("blocks.0.attn.qkv") for k in state) and "feature.0.weight" in state:
            raise CheckpointFormatError(
                f"{source} is an insightface arcface_torch ViT checkpoint, not a PETALface Swin: use "
                "convert_insightface_vit (petal-peft convert insightface-vit)."
            )
        raise missing_key_error(state, key, source, WHAT)
    return state[key]


def infer_swin_architecture(
    state: Mapping[str, torch.Tensor], source: str = "checkpoint", image_size: int | None = None
) -> dict[str, Any]:
    """The Swin hyper-parameters a reference state dict implies (embed dim, depths, heads, window, patch, ...).

    Heads and window come from each stage's ``relative_position_bias_table`` [(2w - 1)^2, heads]; the token grid
    from ``absolute_pos_embed`` (or ``image_size`` when the model has none).
    """
    proj = _require(state, "patch_embed.proj.weight", source)
    _require(state, "layers.0.blocks.0.attn.qkv.weight", source)
    _require(state, "feature_layer.2.weight", source)
    embed_dim, channels, patch = patch_kernel(proj, source, "embed_dim")
    stages = 1 + max(int(m.group(1)) for k in state if (m := _STAGE.match(k)))
    depths = []
    for stage in range(stages):
        blocks = {int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and int(m.group(1)) == stage}
        if not blocks or blocks != set(range(len(blocks))):
            raise CheckpointFormatError(f"{source}: stage layers.{stage} has blocks {sorted(blocks)}, expected 0..n-1.")
        depths.append(len(blocks))
    heads, windows = [], []
    for stage in range(stages):
        table = _require(state, f"layers.{stage}.blocks.0.attn.relative_position_bias_table", source)
        side = math.isqrt(int(table.shape[0]))
        if table.dim() != 2 or side * side != table.shape[0] or side % 2 == 0:
            raise CheckpointFormatError(
                f"{source}: layers.{stage}.blocks.0.attn.relative_position_bias_table has shape {tuple(table.shape)}, "
                "expected [(2 * window - 1) ** 2, heads]."
            )
        heads.append(int(table.shape[1]))
        windows.append((side + 1) // 2)
    if "absolute_pos_embed" in state:
        tokens = int(state["absolute_pos_embed"].shape[1])
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise CheckpointFormatError(f"{source}: absolute_pos_embed has {tokens} tokens, not a square grid.")
        size = grid * patch
        if image_size is not None and int(image_size) != size:
            raise CheckpointFormatError(
                f"{source}: absolute_pos_embed implies {size} px input ({grid} x {grid} patches of {patch} px), "
                f"but image_size={image_size} was given."
            )
    elif image_size is None:
        raise CheckpointFormatError(f"{source} has no absolute_pos_embed: pass image_size (the input size in px).")
    else:
        size = int(image_size)
    fc1 = _require(state, "layers.0.blocks.0.mlp.fc1.weight", source)
    qkv_down2 = "layers.0.blocks.0.attn.qkv.trainable_lora_down2.weight" in state
    qkv_down = "layers.0.blocks.0.attn.qkv.trainable_lora_down.weight" in state
    layout = "quality_gated" if qkv_down2 else "lora" if qkv_down else "pretrained"
    feature_lora = "feature_layer.2.trainable_lora_down.weight" in state
    if layout == "pretrained" and feature_lora:
        layout = "lora"
    arch = {
        "model_type": "face_swin",
        "image_size": size,
        "patch_size": patch,
        "num_channels": channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": windows[0],
        "mlp_ratio": float(fc1.shape[0]) / embed_dim,
        "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in state,
        "use_absolute_embeddings": "absolute_pos_embed" in state,
        "embedding_size": int(state["feature_layer.2.weight"].shape[0]),
        "layout": layout,
    }
    if qkv_down or qkv_down2:
        arch["lora_rank"] = int(state["layers.0.blocks.0.attn.qkv.trainable_lora_down.weight"].shape[0])
    if feature_lora:
        arch["head_lora_rank"] = int(state["feature_layer.2.trainable_lora_down.weight"].shape[0])
    _check_windows(arch, windows, source)
    return arch


def _stage_resolution(arch: Mapping[str, Any], stage: int) -> int:
    return arch["image_size"] // arch["patch_size"] // 2**stage


def _check_windows(arch: Mapping[str, Any], windows: list[int], source: str) -> None:
    window = arch["window_size"]
    for stage, found in enumerate(windows):
        resolution = _stage_resolution(arch, stage)
        if resolution < window:
            raise CheckpointFormatError(
                f"{source}: stage {stage} has a {resolution} x {resolution} token grid, smaller than the window "
                f"{window}; transformers' Swin cannot represent that clamped window exactly."
            )
        if found != window:
            raise CheckpointFormatError(
                f"{source}: stage {stage}'s relative_position_bias_table implies window {found}, stage 0's {window}."
            )


def reference_shapes(arch: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Every key (and its shape) the reference model with ``arch`` has, and the buffers we recompute."""
    e, p, c = arch["embed_dim"], arch["patch_size"], arch["num_channels"]
    stages = len(arch["depths"])
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (e, c, p, p),
        "patch_embed.proj.bias": (e,),
        "patch_embed.norm.weight": (e,),
        "patch_embed.norm.bias": (e,),
    }
    grid = arch["image_size"] // p
    if arch["use_absolute_embeddings"]:
        shapes["absolute_pos_embed"] = (1, grid * grid, e)
    ignorable: list[str] = []
    window = arch["window_size"]
    rank = arch.get("lora_rank")
    for stage in range(stages):
        dim = e * 2**stage
        hidden = int(dim * arch["mlp_ratio"])
        for block in range(arch["depths"][stage]):
            k = f"layers.{stage}.blocks.{block}."
            shapes.update(
                {
                    k + "norm1.weight": (dim,),
                    k + "norm1.bias": (dim,),
                    k + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, arch["num_heads"][stage]),
                    k + "attn.qkv.weight": (3 * dim, dim),
                    k + "attn.proj.weight": (dim, dim),
                    k + "attn.proj.bias": (dim,),
                    k + "norm2.weight": (dim,),
                    k + "norm2.bias": (dim,),
                    k + "mlp.fc1.weight": (hidden, dim),
                    k + "mlp.fc1.bias": (hidden,),
                    k + "mlp.fc2.weight": (dim, hidden),
                    k + "mlp.fc2.bias": (dim,),
                }
            )
            if arch["qkv_bias"]:
                shapes[k + "attn.qkv.bias"] = (3 * dim,)
            if arch["layout"] in ("lora", "quality_gated") and rank is not None:
                suffixes = ("", "2") if arch["layout"] == "quality_gated" else ("",)
                for suffix in suffixes:
                    shapes[k + f"attn.qkv.trainable_lora_down{suffix}.weight"] = (rank, dim)
                    shapes[k + f"attn.qkv.trainable_lora_up{suffix}.weight"] = (3 * dim, rank)
            ignorable += [k + "attn.relative_position_index", k + "attn_mask"]
        if stage < stages - 1:
            shapes[f"layers.{stage}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
            shapes[f"layers.{stage}.downsample.norm.weight"] = (4 * dim,)
            shapes[f"layers.{stage}.downsample.norm.bias"] = (4 * dim,)
    final_dim = e * 2 ** (stages - 1)
    final_side = grid // 2 ** (stages - 1)
    features = final_dim * final_side * final_side
    emb = arch["embedding_size"]
    shapes.update({"norm.weight": (final_dim,), "norm.bias": (final_dim,)})
    for index, width in ((0, features), (3, emb)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"feature_layer.{index}.{name}"] = (width,)
        shapes[f"feature_layer.{index}.num_batches_tracked"] = ()
    shapes["feature_layer.2.weight"] = (emb, features)
    shapes["feature_layer.2.bias"] = (emb,)
    if "head_lora_rank" in arch:
        shapes["feature_layer.2.trainable_lora_down.weight"] = (arch["head_lora_rank"], features)
        shapes["feature_layer.2.trainable_lora_up.weight"] = (emb, arch["head_lora_rank"])
    return shapes, ignorable


_RENAMES = (
    ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
    ("patch_embed.norm.", "embeddings.norm."),
    ("feature_layer.0.", "embedding_head.input_norm."),
    ("feature_layer.2.", "embedding_head.projection."),
    ("feature_layer.3.", "embedding_head.output_norm."),
    ("norm.", "layernorm."),
)
_BLOCK_RENAMES = (
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attn.proj.", "attention.o_proj."),
    ("mlp.", "mlp."),
)


def map_base_weights(state: Mapping[str, torch.Tensor], arch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The reference's non-LoRA tensors under FaceSwinModel's names (fused qkv split into q/k/v)."""
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if "trainable_lora" in key or key.endswith(("relative_position_index", "attn_mask")):
            continue
        if key == "absolute_pos_embed":
            mapped["embeddings.position_embeddings"] = tensor
            continue
        block = _BLOCK.match(key)
        if block:
            prefix = f"encoder.layers.{block.group(1)}.blocks.{block.group(2)}."
            rest = key[block.end() :]
            if rest.startswith("attn.qkv."):
                param = rest.removeprefix("attn.qkv.")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    mapped[f"{prefix}attention.{name}.{param}"] = part.clone()
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    mapped[prefix + new + rest[len(old) :]] = tensor
                    break
            else:  # pragma: no cover - check_layout already refused unknown keys
                raise CheckpointFormatError(f"no mapping for {key!r}.")
            continue
        if key.startswith("layers.") and ".downsample." in key:
            mapped["encoder." + key] = tensor
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                mapped[new + key[len(old) :]] = tensor
                break
        else:  # pragma: no cover
            raise CheckpointFormatError(f"no mapping for {key!r}.")
    return mapped


def to_petalface_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inverse mapping: a FaceSwinModel's weights under the reference's key names (fused qkv, no LoRA).

    For trying the conversion offline on a tiny model, and for round-trip checks; ``torch.save`` the result.
    """
    ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inverse = {new: old for old, new in _RENAMES}
    block_inverse = {new: old for old, new in _BLOCK_RENAMES}
    ref: dict[str, torch.Tensor] = {}
    for key, tensor in ours.items():
        if key == "embeddings.position_embeddings":
            ref["absolute_pos_embed"] = tensor
            continue
        match = re.match(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            prefix, rest = f"layers.{match.group(1)}.blocks.{match.group(2)}.", key[match.end() :]
            if rest.startswith("attention.q_proj."):
                param = rest.removeprefix("attention.q_proj.")
                parts = [ours[key[: match.end()] + f"attention.{n}.{param}"] for n in ("q_proj", "k_proj", "v_proj")]
                ref[prefix + "attn.qkv." + param] = torch.cat(parts, dim=0)
            elif not rest.startswith(("attention.k_proj.", "attention.v_proj.")):
                new = next(n for n in block_inverse if rest.startswith(n))
                ref[prefix + block_inverse[new] + rest[len(new) :]] = tensor
            continue
        if key.startswith("encoder.layers."):
            ref[key.removeprefix("encoder.")] = tensor
            continue
        new = next(n for n in inverse if key.startswith(n))
        ref[inverse[new] + key[len(new) :]] = tensor
    return ref


def split_qkv_factors(down: torch.Tensor, up: torch.Tensor) -> dict[str, BranchFactors]:
    """One fused-qkv branch as three branches: the shared ``down`` and the q/k/v row blocks of ``up``."""
    return {
        name: BranchFactors(down.clone(), part.clone())
        for name, part in zip(("q_proj", "k_proj", "v_proj"), up.chunk(3, dim=0))
    }


def qkv_module_factors(
    state: Mapping[str, torch.Tensor], ref_qkv: str, ours: str, dual: bool, iqa: str
) -> dict[str, ModuleFactors]:
    """The LoRA of the reference's fused ``ref_qkv`` as factors of our ``{ours}q_proj`` / ``k_proj`` / ``v_proj``:
    both branches when ``dual`` (our high-quality branch is the reference's branch for good images under ``iqa``),
    else its single branch."""

    def split(suffix: str) -> dict[str, BranchFactors]:
        branch = BranchFactors.of_reference(state, ref_qkv, suffix)
        return split_qkv_factors(branch.down, branch.up)

    if not dual:
        return {ours + name: ModuleFactors(branch) for name, branch in split("").items()}
    high_suffix, low_suffix = ("2", "") if IQA_HIGHER_IS_BETTER[iqa] else ("", "2")
    high, low = split(high_suffix), split(low_suffix)
    return {ours + name: ModuleFactors(high[name], low[name]) for name in high}


def map_lora_factors(state: Mapping[str, torch.Tensor], arch: Mapping[str, Any], iqa: str) -> dict[str, ModuleFactors]:
    """FaceSwinModel module name -> LoRA factors, oriented so that our high-quality branch is the reference's
    branch for good images (branch 1 with BRISQUE, branch 2 with CNNIQA)."""
    factors: dict[str, ModuleFactors] = {}
    dual = arch["layout"] == "quality_gated"
    if "lora_rank" in arch:
        for stage, depth in enumerate(arch["depths"]):
            for block in range(depth):
                ref = f"layers.{stage}.blocks.{block}.attn.qkv"
                ours = f"encoder.layers.{stage}.blocks.{block}.attention."
                factors.update(qkv_module_factors(state, ref, ours, dual, iqa))
    if "head_lora_rank" in arch:
        branch = BranchFactors.of_reference(state, "feature_layer.2")
        # the un-gated head LoRA: the same factors in both branches (exact for every q, see the module docstring)
        factors["embedding_head.projection"] = ModuleFactors(branch, branch if dual else None)
    return factors


def _target_regex(arch: Mapping[str, Any]) -> str:
    qkv = r"encoder\.layers\.\d+\.blocks\.\d+\.attention\.(q_proj|k_proj|v_proj)"
    parts = ([qkv] if "lora_rank" in arch else []) + (
        [r"embedding_head\.projection"] if "head_lora_rank" in arch else []
    )
    return target_modules_regex(parts)


def convert_petalface_checkpoint(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    iqa: str = "brisque",
    *,
    lora_scale: float = 1.0,
    dtype: str | torch.dtype | None = None,
    gate_threshold: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert a PETALface ``model.pt`` into ``out_dir/base`` (a face-Swin folder) and, when it holds LoRA weights,
    ``out_dir/adapter`` (a PEFT adapter folder).

    A PETALface IResNet checkpoint (``layer1.0.conv1.trainable_lora_down.weight`` ...) becomes a face-IResNet folder
    and a plain PEFT LoRA adapter (PEFT's own Conv2d / Linear LoRA, ``lora_alpha / r = lora_scale``) that reproduces
    the reference forward; its LoRA has a single branch, so ``iqa`` and ``gate_threshold`` do not apply to it.

    Reads the file only with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint (``model.pt``).
        out_dir: a new or empty folder (or any folder with ``overwrite``).
        iqa: the image-quality metric the checkpoint was trained with (``"brisque"`` or ``"cnniqa"``), which
            decides which reference branch is the high-quality one.
        lora_scale: the reference's ``--lora_scale`` (1 in every released run).
        dtype: cast the weights (``"float16"``, ...; default: keep).
        gate_threshold: the IQA threshold the model was trained with; when given, the adapter uses the
            reference's unclamped gate (``gate_mode="linear_unclamped"``, ``allow_unbounded_quality=True``), so
            ``quality_score=`` raw IQA scores reproduce the reference exactly. Without it the adapter keeps the
            bounded default gate and takes ``quality=`` in [0, 1] (for BRISQUE: ``quality = 1 - alpha``; for
            CNNIQA: ``quality = alpha``).
        overwrite: replace what ``out_dir`` holds (only once the new folder is complete).
        progress: show the reading progress.

    Returns:
        A :class:`ConversionResult`: the two folders, the layout, the architecture, notes and the time taken.
    """
    from ..models import FaceSwinConfig, FaceSwinModel

    settings = OutputSettings(out_dir, str(path), iqa, gate_threshold, lora_scale, dtype, overwrite)
    source, iqa = settings.source, settings.iqa
    state = read_state_dict(path, WHAT, progress=progress)
    if is_iresnet_state_dict(state):
        return convert_iresnet_state(
            state,
            out_dir,
            source=source,
            lora_scale=lora_scale,
            dtype=settings.dtype,
            overwrite=overwrite,
            clock=settings.clock,
        )
    arch = infer_swin_architecture(state, source)
    shapes, ignorable = reference_shapes(arch)
    check_layout(state, shapes, ignorable, source, _arch_text(arch))

    config_fields = {k: v for k, v in arch.items() if k not in ("model_type", "layout", "lora_rank", "head_lora_rank")}
    model = FaceSwinModel(FaceSwinConfig(**config_fields, shifted_window_mask=False))
    load_mapped_weights(model, map_base_weights(state, arch))
    factors = map_lora_factors(state, arch, iqa)
    del state
    notes = [
        "the reference never applies Swin's shifted-window attention mask; the converted config keeps that "
        "(shifted_window_mask=false)"
    ]
    what = "A PETALface face-recognition Swin (`model_type: face_swin`)"
    card = base_card(f"Face Swin converted from `{source}`", what, arch["image_size"])
    converted = ConvertedModel(model, arch, factors, card, _target_regex(arch), notes)
    return write_conversion(converted, settings)


def _arch_text(arch: Mapping[str, Any]) -> str:
    keys = ("image_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "layout")
    return ", ".join(f"{k}={arch[k]}" for k in keys)
