"""petal-peft: PETALface quality-gated dual-LoRA adapters as a PEFT extension.

``import petal_peft`` registers the ``QUALITY_GATED_LORA`` adapter type with PEFT and the built-in quality
estimators and gates, so that ``peft.get_peft_model`` and ``PeftModel.from_pretrained`` work with it.
"""

from __future__ import annotations

from . import registry
from .tuner import (
    QUALITY_GATED_LORA,
    QualityGatedLinear,
    QualityGatedLoraConfig,
    QualityGatedLoraModel,
    export_proxy_encoders,
)
from .tuner.proxy import merged_encoder

try:  # the face part registers its estimators and gates by name
    from . import quality  # noqa: F401
except ImportError as error:  # pragma: no cover - only while the quality package is incomplete
    if "petal_peft.quality" not in str(error):
        raise

__version__ = "0.1.0"

__all__ = [
    "QUALITY_GATED_LORA",
    "QualityGatedLinear",
    "QualityGatedLoraConfig",
    "QualityGatedLoraModel",
    "__version__",
    "export_proxy_encoders",
    "merged_encoder",
    "registry",
]
