"""What every converter does once it has a loaded base model and its LoRA factors: choose the gate the adapter
records, and write ``out_dir/base`` (+ ``out_dir/adapter``) in one staged, atomic step."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import ModuleFactors, write_adapter, write_base
from .common import CheckpointFormatError, ConversionResult, Stopwatch, staged_directory

__all__ = [
    "IQA_HIGHER_IS_BETTER",
    "adapter_notes",
    "check_iqa",
    "gate_kwargs",
    "load_mapped_weights",
    "missing_key_error",
    "write_conversion",
]

#: direction of the IQA score the reference computed alpha from: decides which reference branch is high quality
IQA_HIGHER_IS_BETTER = {"brisque": False, "cnniqa": True}


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
    article = "an" if what[:1].lower() in "aeiou" else "a"
    return CheckpointFormatError(
        f"{source} is not {article} {what}: it has no {key!r} (its first keys: {shown}{more})."
    )


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


def write_conversion(
    out_dir: str | os.PathLike,
    *,
    model: nn.Module,
    processor: Any,
    card: str,
    arch: Mapping[str, Any],
    factors: Mapping[str, ModuleFactors],
    target_modules: str,
    iqa: str,
    gate_threshold: float | None,
    lora_scale: float,
    dtype: torch.dtype | None,
    overwrite: bool,
    source: str,
    clock: Stopwatch,
    notes: list[str],
) -> ConversionResult:
    """Write ``out_dir/base`` and, when there are LoRA factors, ``out_dir/adapter`` (all or nothing)."""
    out_dir = Path(out_dir)
    notes = list(notes)
    adapter_dir = None
    with staged_directory(out_dir, overwrite=overwrite) as staging:
        write_base(model, processor, staging / "base", card, dtype)
        if factors:
            adapter_dir = out_dir / "adapter"
            write_adapter(
                model,
                dict(factors),
                layout=arch["layout"],
                target_modules=target_modules,
                scale=lora_scale,
                adapter_dir=staging / "adapter",
                base_name_or_path=str((out_dir / "base").resolve()),
                dtype=dtype,
                config_kwargs=gate_kwargs(iqa, gate_threshold),
            )
            notes += adapter_notes(arch, iqa, gate_threshold)
    return ConversionResult(
        base_dir=out_dir / "base",
        adapter_dir=adapter_dir,
        layout=arch["layout"],
        architecture={k: v for k, v in arch.items() if k != "layout"},
        source=source,
        seconds=clock.seconds,
        notes=notes,
    )
