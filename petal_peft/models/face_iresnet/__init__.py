"""insightface's IResNet (arcface_torch iresnet18 ... iresnet200) as a transformers model."""

from .configuration_face_iresnet import IRESNET_DEPTHS, FaceIResNetConfig
from .modeling_face_iresnet import FaceIResNetModel, FaceIResNetModelOutput, FaceIResNetPreTrainedModel

__all__ = [
    "IRESNET_DEPTHS",
    "FaceIResNetConfig",
    "FaceIResNetModel",
    "FaceIResNetModelOutput",
    "FaceIResNetPreTrainedModel",
]
