"""Face backbones defined by petal-peft (transformers-style: one configuration and one modeling file each),
registered with ``AutoConfig`` / ``AutoModel`` when imported."""

from petal_peft.models.face_conv_vit import FaceConvViTConfig, FaceConvViTModel

__all__ = ["FaceConvViTConfig", "FaceConvViTModel"]
