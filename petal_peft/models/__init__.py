"""petal-peft's face backbones as transformers models, registered with the Auto classes on import.

* ``face_swin`` (:class:`FaceSwinModel`): the PETALface Swin with its embedding head;
* ``face_vit`` (:class:`FaceViTModel`): insightface arcface_torch's ViT (no CLS token);
* ``face_conv_vit`` (:class:`FaceConvViTModel`): a transformer on a residual conv stem, the real-face base's
  architecture;
* ``face_iresnet`` (:class:`FaceIResNetModel`): insightface's IResNet-18/34/50/100/200 (arcface_torch).

After ``import petal_peft``, ``AutoConfig`` / ``AutoModel.from_pretrained(folder)`` load them, and
``QualityGatedLoraConfig()`` finds their default target modules (the attention query/key/value projections and
the embedding head's linear layers, where the PETALface reference puts its adapters; for the IResNet, the
residual blocks' convolutions and the embedding layer).
"""

from __future__ import annotations

from ..registry import DEFAULT_TARGET_MODULES, TARGET_MODULE_GROUPS
from .face_conv_vit import FaceConvViTConfig, FaceConvViTModel
from .face_conv_vit.target_groups import FACE_CONV_VIT_TARGET_GROUPS
from .face_iresnet import IRESNET_DEPTHS, FaceIResNetConfig, FaceIResNetModel, FaceIResNetModelOutput
from .face_iresnet.target_groups import FACE_IRESNET_TARGET_GROUPS
from .face_swin import FaceSwinConfig, FaceSwinModel, FaceSwinModelOutput
from .face_vit import FaceViTConfig, FaceViTModel, FaceViTModelOutput
from .image_processing import face_image_processor

__all__ = [
    "FACE_CONV_VIT_TARGET_GROUPS",
    "FACE_CONV_VIT_TARGET_MODULES",
    "FACE_IRESNET_TARGET_GROUPS",
    "FACE_IRESNET_TARGET_MODULES",
    "FACE_SWIN_TARGET_MODULES",
    "FACE_VIT_TARGET_MODULES",
    "FaceConvViTConfig",
    "FaceConvViTModel",
    "FaceIResNetConfig",
    "FaceIResNetModel",
    "FaceIResNetModelOutput",
    "FaceSwinConfig",
    "FaceSwinModel",
    "FaceSwinModelOutput",
    "FaceViTConfig",
    "FaceViTModel",
    "FaceViTModelOutput",
    "IRESNET_DEPTHS",
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

#: both convolutions of every residual block, and the embedding layer (the stem and the 1 x 1 shortcuts stay frozen)
FACE_IRESNET_TARGET_MODULES = r"(.*\.)?layer\d+\.\d+\.(conv1|conv2)|(.*\.)?fc"


def _register() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTImageProcessorPil

    for config_class, model_class, targets in (
        (FaceSwinConfig, FaceSwinModel, FACE_SWIN_TARGET_MODULES),
        (FaceViTConfig, FaceViTModel, FACE_VIT_TARGET_MODULES),
        (FaceConvViTConfig, FaceConvViTModel, FACE_CONV_VIT_TARGET_MODULES),
        (FaceIResNetConfig, FaceIResNetModel, FACE_IRESNET_TARGET_MODULES),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": ViTImageProcessorPil}, exist_ok=True)
        DEFAULT_TARGET_MODULES.register(config_class.model_type, targets, overwrite=True)
    TARGET_MODULE_GROUPS.register(FaceConvViTConfig.model_type, FACE_CONV_VIT_TARGET_GROUPS, overwrite=True)
    TARGET_MODULE_GROUPS.register(FaceIResNetConfig.model_type, FACE_IRESNET_TARGET_GROUPS, overwrite=True)


_register()
