"""petal-peft: PETALface quality-gated dual-LoRA adapters as a PEFT extension.

``import petal_peft`` registers the ``QUALITY_GATED_LORA`` adapter type with PEFT and the built-in quality
estimators and gates, so that ``peft.get_peft_model`` and ``PeftModel.from_pretrained`` work with it.
"""

from __future__ import annotations

# `quality` registers the built-in quality estimators and gates by name, where the tuner finds them; `models`
# registers the face backbones with transformers' Auto classes and their default target modules.
from . import models, quality, registry
from .tuner import (
    QUALITY_GATED_LORA,
    QualityGatedConv2d,
    QualityGatedLayer,
    QualityGatedLinear,
    QualityGatedLoraConfig,
    QualityGatedLoraModel,
    export_proxy_encoders,
    resolve_target_modules,
    target_module_groups,
)
from .tuner.proxy import merged_encoder

__version__ = "0.1.0"

__all__ = [
    "QUALITY_GATED_LORA",
    "QualityGatedConv2d",
    "QualityGatedLayer",
    "QualityGatedLinear",
    "QualityGatedLoraConfig",
    "QualityGatedLoraModel",
    "__version__",
    "quality",
    "export_proxy_encoders",
    "merged_encoder",
    "models",
    "registry",
    "resolve_target_modules",
    "target_module_groups",
]
