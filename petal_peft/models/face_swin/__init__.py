"""The face Swin (PETALface's backbone) as a transformers model."""

from .configuration_face_swin import FaceSwinConfig
from .modeling_face_swin import FaceSwinEmbeddingHead, FaceSwinModel, FaceSwinModelOutput

__all__ = ["FaceSwinConfig", "FaceSwinEmbeddingHead", "FaceSwinModel", "FaceSwinModelOutput"]
