"""What every converter does once it has a loaded base model and its LoRA factors: choose the gate the adapter
records, and write ``out_dir/base`` (+ ``out_dir/adapter``) in one staged, atomic step."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import ModuleFactors, write_adapter, write_base
from .common import CheckpointFormatError, ConversionResult, Stopwatch, parse_dtype, staged_directory, with_article

__all__ = [
    "IQA_HIGHER_IS_BETTER",
    "ConvertedModel",
    "OutputSettings",
    "adapter_notes",
    "base_card",
    "check_iqa",
    "gate_kwargs",
    "load_mapped_weights",
    "missing_key_error",
    "patch_kernel",
    "require_tensor",
    "target_modules_regex",
    "write_conversion",
]

#: direction of the IQA score the reference computed alpha from: decides which reference branch is high quality
IQA_HIGHER_IS_BETTER = {"brisque": False, "cnniqa": True}


def base_card(title: str, what: str, image_size: int) -> str:
    """A converted base model's README: model-card front matter, the ``title`` heading, ``what`` the model is, how
    to load and feed it, and the note that the weights keep their authors' terms."""
    return (
        "---\nlibrary_name: transformers\ntags:\n- face-recognition\n- petal-peft\n---\n\n"
        f"# {title}\n\n"
        f"{what} converted by petal-peft. Load it with `import petal_peft` first (which registers the architecture), "
        "then `AutoModel.from_pretrained(...)`; the face embedding is the output's `pooler_output`. Input: aligned "
        f"RGB faces of {image_size} px, normalised to [-1, 1] (see `preprocessor_config.json`).\n\n"
        "The weights are those of the original checkpoint; their licence and terms of use are its authors'.\n"
    )


def target_modules_regex(parts: Sequence[str]) -> str:
    """A PEFT ``target_modules`` regex that matches any of the module-name patterns ``parts`` at any depth."""
    return "|".join(f"(.*\\.)?{part}" for part in parts)


def check_iqa(iqa: str) -> str:
    """The IQA metric's name, lower-cased, or a ValueError listing the known ones."""
    name = str(iqa).lower()
    if name not in IQA_HIGHER_IS_BETTER:
        raise ValueError(f"iqa must be one of {sorted(IQA_HIGHER_IS_BETTER)}, got {iqa!r}.")
    return name


def missing_key_error(state: Mapping[str, torch.Tensor], key: str, source: str, what: str) -> CheckpointFormatError:
    """The error for a state dict that lacks ``key``: names the file, the kind expected and its first keys."""
    shown = ", ".join(sorted(state)[:6])
    more = " ..." if len(state) > 6 else ""
    return CheckpointFormatError(
        f"{source} is not {with_article(what)}: it has no {key!r} (its first keys: {shown}{more})."
    )


def patch_kernel(proj: torch.Tensor, source: str, width: str = "dim") -> tuple[int, int, int]:
    """(width, channels, patch) of a transformer's ``patch_embed.proj.weight``, or a CheckpointFormatError
    unless it is a square ``[width, channels, patch, patch]`` kernel (``width`` names the first dimension)."""
    if proj.dim() != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointFormatError(
            f"{source}: patch_embed.proj.weight has shape {tuple(proj.shape)}, expected a "
            f"square [{width}, channels, patch, patch] kernel."
        )
    return int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])


#: a key only one checkpoint family has -> (what that family is, how to convert it)
FAMILY_MARKERS = {
    "layers.0.blocks.0.attn.qkv.weight": (
        "a PETALface Swin checkpoint",
        "convert_petalface_checkpoint (petal-peft convert petalface)",
    ),
    "blocks.0.attn.qkv.weight": (
        "an insightface arcface_torch ViT checkpoint",
        "convert_insightface_vit (petal-peft convert insightface-vit)",
    ),
}


def require_tensor(
    state: Mapping[str, torch.Tensor], key: str, source: str, what: str, other_families: tuple[str, ...]
) -> torch.Tensor:
    """``state[key]``, or an error: naming the converter to use when the state dict is of another known family
    (``other_families``: keys of :data:`FAMILY_MARKERS`), else listing the first keys it has."""
    if key in state:
        return state[key]
    for marker in other_families:
        if marker in state:
            family, converter = FAMILY_MARKERS[marker]
            expected = with_article(what.split(" (")[0])
            raise CheckpointFormatError(f"{source} is {family}, not {expected}: use {converter}.")
    raise missing_key_error(state, key, source, what)


def load_mapped_weights(model: nn.Module, mapped: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load the renamed reference weights (the layout was checked before) and put the model in eval mode."""
    missing, unexpected = model.load_state_dict(dict(mapped), strict=False)
    if missing or unexpected:  # pragma: no cover - check_layout makes this unreachable
        raise CheckpointFormatError(f"internal mapping error: missing {missing[:4]}, unexpected {unexpected[:4]}.")
    return model.eval()


def gate_kwargs(iqa: str, gate_threshold: float | None) -> dict[str, Any]:
    """The adapter config's gate fields: the bounded default, or with a threshold the reference's unclamped rule."""
    kwargs: dict[str, Any] = {
        "score_higher_is_better": IQA_HIGHER_IS_BETTER[iqa],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    if gate_threshold is not None:
        threshold = float(gate_threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"gate_threshold must be finite, got {gate_threshold}.")
        kwargs.update(
            gate_mode="linear_unclamped", gate_threshold=threshold, gate_temperature=1.0, allow_unbounded_quality=True
        )
    return kwargs


def adapter_notes(arch: Mapping[str, Any], iqa: str, gate_threshold: float | None) -> list[str]:
    """What a user of the converted adapter must know (how to pass quality, what became what)."""
    if arch["layout"] != "quality_gated":
        return ["single-branch LoRA written as a plain PEFT LoRA adapter (no quality gate)"]
    q = "alpha" if IQA_HIGHER_IS_BETTER[iqa] else "1 - alpha"
    notes = [f"trained with {iqa.upper()}: pass quality = {q} (the reference's alpha) to reproduce it"]
    if any(key.endswith("lora_rank") and key != "lora_rank" for key in arch):
        notes.append("the un-gated head LoRA is stored in both branches of the adapter's head layer (exact for any q)")
    if gate_threshold is None:
        notes.append(
            "no --gate_threshold: the adapter keeps the bounded sigmoid gate; quality_score= needs calibration"
        )
    return notes


@dataclass
class OutputSettings:
    """How a converter writes its result: the same for every checkpoint family.

    ``iqa`` and ``gate_threshold`` set the adapter's gate (see :func:`gate_kwargs`); ``lora_scale`` multiplies the
    LoRA factors; ``dtype`` is the saved weights' dtype (a name or a torch dtype; None: as read); ``source`` and
    the ``clock`` (started when the settings are made) go into the result. Bad values are refused here, before
    anything is read.
    """

    out_dir: str | os.PathLike
    source: str
    iqa: str = "brisque"
    gate_threshold: float | None = None
    lora_scale: float = 1.0
    dtype: str | torch.dtype | None = None
    overwrite: bool = False
    clock: Stopwatch = field(default_factory=Stopwatch)

    def __post_init__(self) -> None:
        self.iqa = check_iqa(self.iqa)
        self.dtype = parse_dtype(self.dtype)


@dataclass
class ConvertedModel:
    """A converter's product before it is written: the loaded base, its LoRA factors and what describes them."""

    model: nn.Module
    arch: Mapping[str, Any]
    factors: Mapping[str, ModuleFactors]
    card: str
    target_modules: str
    notes: list[str] = field(default_factory=list)


def write_conversion(converted: ConvertedModel, settings: OutputSettings) -> ConversionResult:
    """Write ``out_dir/base`` and, when there are LoRA factors, ``out_dir/adapter`` (all or nothing)."""
    from ..models import face_image_processor

    c, s = converted, settings
    out_dir, notes, adapter_dir = Path(s.out_dir), list(c.notes), None
    processor = face_image_processor(c.arch["image_size"])
    with staged_directory(out_dir, overwrite=s.overwrite) as staging:
        write_base(c.model, processor, staging / "base", c.card, s.dtype)
        if c.factors:
            adapter_dir = out_dir / "adapter"
            write_adapter(
                c.model,
                dict(c.factors),
                layout=c.arch["layout"],
                target_modules=c.target_modules,
                scale=s.lora_scale,
                adapter_dir=staging / "adapter",
                base_name_or_path=str((out_dir / "base").resolve()),
                dtype=s.dtype,
                config_kwargs=gate_kwargs(s.iqa, s.gate_threshold),
            )
            notes += adapter_notes(c.arch, s.iqa, s.gate_threshold)
    return ConversionResult(
        base_dir=out_dir / "base",
        adapter_dir=adapter_dir,
        layout=c.arch["layout"],
        architecture={k: v for k, v in c.arch.items() if k != "layout"},
        source=s.source,
        seconds=s.clock.seconds,
        notes=notes,
    )
