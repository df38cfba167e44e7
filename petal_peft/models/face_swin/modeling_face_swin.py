"""The face Swin: transformers' :class:`~transformers.SwinModel` with the PETALface embedding head.

The released PETALface backbones are Microsoft-style Swin transformers whose 512-d face embedding comes from the
flattened final tokens (BatchNorm1d -> Dropout -> Linear -> BatchNorm1d) rather than from average pooling. This
model is a ``SwinModel`` with that head; the embedding is the output's ``pooler_output``, so code written for
transformers' vision models (and petal-peft's training and evaluation) takes it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import SwinModel
from transformers.models.swin.modeling_swin import SwinLayer, SwinModelOutput
from transformers.utils.generic import can_return_tuple

from ..layers import FrozenStatsBatchNorm1d, check_pixel_values
from .configuration_face_swin import FaceSwinConfig

__all__ = ["FaceSwinEmbeddingHead", "FaceSwinModel", "FaceSwinModelOutput"]


@dataclass
class FaceSwinModelOutput(SwinModelOutput):
    r"""Outputs of :class:`FaceSwinModel`.

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, final_tokens, hidden_size)`):
        The final tokens after the last LayerNorm (what the head flattens).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
        The face embedding (not L2-normalised; compare embeddings by cosine similarity).
    """


class FaceSwinEmbeddingHead(nn.Module):
    """Flattened final tokens -> BatchNorm1d -> Dropout -> Linear -> BatchNorm1d (the reference's feature layer)."""

    def __init__(self, config: FaceSwinConfig) -> None:
        super().__init__()
        in_features = config.head_in_features
        self.input_norm = FrozenStatsBatchNorm1d(in_features, eps=config.head_batch_norm_eps)
        self.dropout = nn.Dropout(config.head_dropout)
        self.projection = nn.Linear(in_features, config.embedding_size)
        self.output_norm = FrozenStatsBatchNorm1d(config.embedding_size, eps=config.head_batch_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # token-major flattening: [B, T, C] -> [B, T * C], as the reference reshapes its final tokens
        hidden = self.input_norm(tokens.flatten(1))
        return self.output_norm(self.projection(self.dropout(hidden)))


class _UnmaskedShiftSwinLayer(SwinLayer):
    """A Swin block whose shifted windows attend without the cyclic-shift mask, as the PETALface reference does."""

    def get_attn_mask(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> None:
        return None


class FaceSwinModel(SwinModel):
    """A Swin transformer producing a face embedding (``pooler_output``) from an aligned face image.

    Build one from a :class:`FaceSwinConfig` (random weights), load a folder with ``from_pretrained``, or convert a
    released PETALface checkpoint with :func:`petal_peft.convert.convert_petalface_checkpoint`.
    """

    config_class = FaceSwinConfig
    config: FaceSwinConfig

    def __init__(self, config: FaceSwinConfig) -> None:
        super().__init__(config, add_pooling_layer=False, use_mask_token=False)
        if not config.shifted_window_mask:
            for module in self.encoder.modules():
                if type(module) is SwinLayer:
                    module.__class__ = _UnmaskedShiftSwinLayer
        self.embedding_head = FaceSwinEmbeddingHead(config)
        self.post_init()

    def _check_pixel_values(self, pixel_values: torch.Tensor | None) -> None:
        check_pixel_values("FaceSwinModel", pixel_values, self.config.num_channels, self.config.image_size)

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs) -> FaceSwinModelOutput:
        r"""pixel_values [B, C, H, W] normalised as the image processor does -> face embedding in ``pooler_output``."""
        self._check_pixel_values(pixel_values)
        outputs = super().forward(pixel_values, **kwargs)
        tokens = outputs.last_hidden_state
        return FaceSwinModelOutput(
            last_hidden_state=tokens,
            pooler_output=self.embedding_head(tokens),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            reshaped_hidden_states=outputs.reshaped_hidden_states,
        )
