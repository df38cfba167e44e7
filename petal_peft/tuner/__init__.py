"""The quality-gated dual-LoRA tuner, registered with PEFT as ``PeftType.QUALITY_GATED_LORA``.

This subpackage is the tuner core: it never imports the face-recognition parts (quality estimators, heads, data,
evaluation). Those register themselves in :mod:`petal_peft.registry`, where the tuner finds them by name.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

PEFT_TYPE_NAME = "QUALITY_GATED_LORA"


def _add_peft_type_member() -> PeftType:
    """Add QUALITY_GATED_LORA to PEFT's PeftType str-enum (idempotent).

    PEFT's register_peft_method only accepts names that are already enum members, and a plain string would break
    transformers' adapter integration, which calls ``peft_type.value``.
    """
    existing = PeftType.__members__.get(PEFT_TYPE_NAME)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, PEFT_TYPE_NAME)
    member._name_ = PEFT_TYPE_NAME
    member._value_ = PEFT_TYPE_NAME
    member.__objclass__ = PeftType
    type.__setattr__(PeftType, PEFT_TYPE_NAME, member)
    PeftType._member_map_[PEFT_TYPE_NAME] = member
    PeftType._value2member_map_[PEFT_TYPE_NAME] = member
    PeftType._member_names_.append(PEFT_TYPE_NAME)
    return member


QUALITY_GATED_LORA = _add_peft_type_member()

from .config import QualityGatedLoraConfig  # noqa: E402
from .conv import QualityGatedConv2d  # noqa: E402
from .gated_layer import QualityGatedLayer  # noqa: E402
from .layer import QualityGatedLinear  # noqa: E402
from .loading import AdapterMismatchError, check_adapter_folder, load_quality_gated_adapter  # noqa: E402
from .model import QualityGatedLoraModel  # noqa: E402
from .proxy import check_proxy_encoders, export_proxy_encoders  # noqa: E402
from .quality_state import QualityState, validate_quality  # noqa: E402
from .targets import (  # noqa: E402
    DEFAULT_TARGET_MODULES,
    default_target_modules,
    resolve_target_modules,
    target_module_groups,
)


def _register_with_peft() -> None:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    if PEFT_TYPE_TO_CONFIG_MAPPING.get(QUALITY_GATED_LORA) is QualityGatedLoraConfig:
        return
    # prefix "lora_" is shared with LoRA/AdaLoRA on purpose: PEFT finds adapter weights by that substring.
    register_peft_method(
        name=PEFT_TYPE_NAME.lower(),
        config_cls=QualityGatedLoraConfig,
        model_cls=QualityGatedLoraModel,
        prefix="lora_",
    )


_register_with_peft()

__all__ = [
    "AdapterMismatchError",
    "DEFAULT_TARGET_MODULES",
    "QUALITY_GATED_LORA",
    "QualityGatedConv2d",
    "QualityGatedLayer",
    "QualityGatedLinear",
    "QualityGatedLoraConfig",
    "QualityGatedLoraModel",
    "QualityState",
    "check_adapter_folder",
    "check_proxy_encoders",
    "default_target_modules",
    "export_proxy_encoders",
    "load_quality_gated_adapter",
    "resolve_target_modules",
    "target_module_groups",
    "validate_quality",
]
