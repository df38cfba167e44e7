"""petal-peft: PETALface quality-gated dual-LoRA adapters as a PEFT extension.

``import petal_peft`` registers the ``QUALITY_GATED_LORA`` adapter type with PEFT, the built-in quality
estimators and gates, and petal-peft's face backbones with ``AutoConfig`` / ``AutoModel``, so that
``peft.get_peft_model``, ``PeftModel.from_pretrained`` and ``AutoModel.from_pretrained`` work with them.
"""

from __future__ import annotations

# `quality` registers the built-in quality estimators and gates by name, where the tuner finds them; `models`
# registers petal-peft's face backbones with the Auto classes and their default target modules.
from . import models, quality, registry
from .tuner import (
    QUALITY_GATED_LORA,
    QualityGatedLinear,
    QualityGatedLoraConfig,
    QualityGatedLoraModel,
    export_proxy_encoders,
)
from .tuner.proxy import merged_encoder

__version__ = "0.1.0"

__all__ = [
    "QUALITY_GATED_LORA",
    "QualityGatedLinear",
    "QualityGatedLoraConfig",
    "QualityGatedLoraModel",
    "__version__",
    "quality",
    "export_proxy_encoders",
    "merged_encoder",
    "models",
    "registry",
]
