"""The face ViT (insightface arcface_torch's VisionTransformer) as a transformers model."""

from .configuration_face_vit import FaceViTConfig
from .modeling_face_vit import FaceViTModel, FaceViTModelOutput, FaceViTPreTrainedModel

__all__ = ["FaceViTConfig", "FaceViTModel", "FaceViTModelOutput", "FaceViTPreTrainedModel"]
