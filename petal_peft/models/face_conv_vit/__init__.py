"""The convolutional-stem face transformer (``model_type="face_conv_vit"``); ``petal_peft.models`` registers it
with the Auto classes and the tuner's default target modules (attention q/k/v and the final projection)."""

from .configuration_face_conv_vit import FaceConvViTConfig
from .modeling_face_conv_vit import FaceConvViTModel, FaceConvViTPreTrainedModel

__all__ = ["FaceConvViTConfig", "FaceConvViTModel", "FaceConvViTPreTrainedModel"]
