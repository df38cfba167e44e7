"""petal-peft's face backbones as transformers models, registered with the Auto classes on import.

* ``face_swin`` (:class:`FaceSwinModel`): the PETALface Swin with its embedding head;
* ``face_vit`` (:class:`FaceViTModel`): insightface arcface_torch's ViT (no CLS token);
* ``face_conv_vit`` (:class:`FaceConvViTModel`): a transformer on a residual conv stem, the real-face base's
  architecture.

After ``import petal_peft``, ``AutoConfig`` / ``AutoModel.from_pretrained(folder)`` load them, and
``QualityGatedLoraConfig()`` finds their default target modules (the attention query/key/value projections and
the embedding head's linear layers, where the PETALface reference puts its adapters).
"""

from __future__ import annotations

from ..registry import DEFAULT_TARGET_MODULES, TARGET_MODULE_GROUPS
from .face_conv_vit import FaceConvViTConfig, FaceConvViTModel
from .face_conv_vit.target_groups import FACE_CONV_VIT_TARGET_GROUPS
from .face_swin import FaceSwinConfig, FaceSwinModel, FaceSwinModelOutput
from .face_vit import FaceViTConfig, FaceViTModel, FaceViTModelOutput
from .image_processing import face_image_processor

__all__ = [
    "FACE_CONV_VIT_TARGET_GROUPS",
    "FACE_CONV_VIT_TARGET_MODULES",
    "FACE_SWIN_TARGET_MODULES",
    "FACE_VIT_TARGET_MODULES",
    "FaceConvViTConfig",
    "FaceConvViTModel",
    "FaceSwinConfig",
    "FaceSwinModel",
    "FaceSwinModelOutput",
    "FaceViTConfig",
    "FaceViTModel",
    "FaceViTModelOutput",
    "face_image_processor",
]

_QKV = r"(q_proj|k_proj|v_proj)"
#: every block's query/key/value (the reference's fused qkv, split) and the head's feature projection
FACE_SWIN_TARGET_MODULES = (
    rf"(.*\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.{_QKV}|(.*\.)?embedding_head\.projection"
)
#: every block's query/key/value and both linear layers of the head (arcface_torch's LoRA placement)
FACE_VIT_TARGET_MODULES = rf"(.*\.)?encoder\.layers\.\d+\.attention\.{_QKV}|(.*\.)?embedding_head\.(projection|output)"

#: every layer's attention query/key/value and the final projection (its "default" layer group)
FACE_CONV_VIT_TARGET_MODULES = FACE_CONV_VIT_TARGET_GROUPS["default"]


def _register() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTImageProcessorPil

    for config_class, model_class, targets in (
        (FaceSwinConfig, FaceSwinModel, FACE_SWIN_TARGET_MODULES),
        (FaceViTConfig, FaceViTModel, FACE_VIT_TARGET_MODULES),
        (FaceConvViTConfig, FaceConvViTModel, FACE_CONV_VIT_TARGET_MODULES),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": ViTImageProcessorPil}, exist_ok=True)
        DEFAULT_TARGET_MODULES.register(config_class.model_type, targets, overwrite=True)
    TARGET_MODULE_GROUPS.register(FaceConvViTConfig.model_type, FACE_CONV_VIT_TARGET_GROUPS, overwrite=True)


_register()
