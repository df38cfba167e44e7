"""The convolutional-stem face transformer (``model_type="face_conv_vit"``), registered with ``AutoConfig`` /
``AutoModel`` and with the tuner's default target modules (attention q/k/v and the final projection) on import."""

from transformers import AutoConfig, AutoModel

from petal_peft.registry import DEFAULT_TARGET_MODULES

from .configuration_face_conv_vit import FaceConvViTConfig
from .modeling_face_conv_vit import FaceConvViTModel, FaceConvViTPreTrainedModel

__all__ = ["FaceConvViTConfig", "FaceConvViTModel", "FaceConvViTPreTrainedModel"]

AutoConfig.register(FaceConvViTConfig.model_type, FaceConvViTConfig, exist_ok=True)
AutoModel.register(FaceConvViTConfig, FaceConvViTModel, exist_ok=True)
if FaceConvViTConfig.model_type not in DEFAULT_TARGET_MODULES:
    DEFAULT_TARGET_MODULES.register(
        FaceConvViTConfig.model_type, r"(.*\.)?layers\.\d+\.attention\.(q_proj|k_proj|v_proj)|(.*\.)?pooler\.dense"
    )
