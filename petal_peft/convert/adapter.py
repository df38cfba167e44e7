"""Writing converted LoRA factors as a PEFT adapter folder, and the base model beside it.

The reference keeps LoRA factors inside its own layers (``trainable_lora_down`` [r, in] = PEFT's ``lora_A``,
``trainable_lora_up`` [out, r] = ``lora_B``). Rather than writing PEFT's file format by hand, the converter injects
a freshly configured adapter into the converted base, copies the factors into it and lets PEFT save it, so the
folder is exactly what ``PeftModel.from_pretrained`` expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import CheckpointFormatError, lora_alpha_for

__all__ = ["BranchFactors", "ModuleFactors", "write_adapter", "write_base"]

#: the reference's LoRA dropout (applied to each branch's output; PEFT applies it where its config says)
REFERENCE_LORA_DROPOUT = 0.1


@dataclass
class BranchFactors:
    """One LoRA branch: ``down`` [r, in] (PEFT's lora_A weight) and ``up`` [out, r] (lora_B weight)."""

    down: torch.Tensor
    up: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @classmethod
    def of_reference(cls, state: Mapping[str, torch.Tensor], module: str, suffix: str = "") -> BranchFactors:
        """The branch the reference keeps in ``module`` as ``trainable_lora_down{suffix}`` / ``..._up{suffix}``."""
        return cls(
            state[f"{module}.trainable_lora_down{suffix}.weight"], state[f"{module}.trainable_lora_up{suffix}.weight"]
        )


@dataclass
class ModuleFactors:
    """The LoRA of one target module: ``high`` and ``low`` quality branches (the same object twice for an
    un-gated single-branch LoRA represented in a quality-gated adapter), or ``high`` only for a plain LoRA."""

    high: BranchFactors
    low: BranchFactors | None = None


def write_base(model: nn.Module, processor: Any, base_dir: Path, card: str, dtype: torch.dtype | None) -> None:
    """Save the backbone (safetensors), its image processor and a short model card."""
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(base_dir, safe_serialization=True)
    processor.save_pretrained(base_dir)
    (base_dir / "README.md").write_text(card, encoding="utf-8")


def write_adapter(
    base: nn.Module,
    factors: Mapping[str, ModuleFactors],
    *,
    layout: str,
    target_modules: str,
    scale: float,
    adapter_dir: Path,
    base_name_or_path: str,
    dtype: torch.dtype | None,
    config_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Inject an adapter configured for ``factors`` into ``base``, fill it, and save it to ``adapter_dir``.

    ``layout``: ``"quality_gated"`` (a QUALITY_GATED_LORA adapter; every module needs both branches) or ``"lora"``
    (PEFT's plain LoRA). ``scale`` is the reference's branch scale (lora_alpha = scale * r).
    """
    from peft import LoraConfig, get_peft_model

    from .. import QualityGatedLoraConfig

    ranks = {name: f.high.rank for name, f in factors.items()}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    rank_pattern = {f"^{name}$": r for name, r in ranks.items() if r != rank}
    alpha_pattern = {pattern: lora_alpha_for(scale, r) for pattern, r in rank_pattern.items()}
    common = dict(
        r=rank,
        lora_alpha=lora_alpha_for(scale, rank),
        lora_dropout=REFERENCE_LORA_DROPOUT,
        target_modules=target_modules,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=False,
    )
    if layout == "quality_gated":
        config = QualityGatedLoraConfig(**common, **dict(config_kwargs or {}))
    elif layout == "lora":
        config = LoraConfig(**common)
    else:
        raise ValueError(f"unknown adapter layout {layout!r}.")
    # PEFT records base.name_or_path and reads that folder's config while saving: the staged base for now
    base.name_or_path = str(adapter_dir.parent / "base")
    peft_model = get_peft_model(base, config)
    inner = peft_model.base_model.model
    adapted = {
        name for name, module in inner.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    if adapted != set(factors):
        raise CheckpointFormatError(
            f"internal mapping error: the adapter targets {sorted(adapted - set(factors))[:4]} without weights "
            f"and has weights for {sorted(set(factors) - adapted)[:4]}"
        )
    with torch.no_grad():
        for name, module_factors in factors.items():
            layer = inner.get_submodule(name)
            _copy(layer.lora_A["default"].weight, module_factors.high.down, name)
            _copy(layer.lora_B["default"].weight, module_factors.high.up, name)
            if layout == "quality_gated":
                low = module_factors.low
                if low is None:
                    raise CheckpointFormatError(f"internal mapping error: {name} has no low-quality branch.")
                _copy(layer.lora_A_lq["default"].weight, low.down, name)
                _copy(layer.lora_B_lq["default"].weight, low.up, name)
    if dtype is not None:
        peft_model.to(dtype)
    peft_model.save_pretrained(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    saved["base_model_name_or_path"] = base_name_or_path  # where the base will be once the folder is published
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _copy(target: torch.Tensor, source: torch.Tensor, name: str) -> None:
    if tuple(target.shape) != tuple(source.shape):
        raise CheckpointFormatError(
            f"LoRA factor for {name}: shape {tuple(source.shape)} does not fit the adapter's {tuple(target.shape)}."
        )
    target.copy_(source.to(target.dtype))
