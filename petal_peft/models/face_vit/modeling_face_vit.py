"""The face ViT: insightface arcface_torch's VisionTransformer written as a transformers model.

transformers' ViT always prepends a CLS token and pools it; arcface_torch's face ViT has no CLS token and embeds
a face by flattening all its tokens into a BatchNorm'd two-layer head. Module names follow transformers'
(``encoder.layers.*.attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``), so PEFT targets read the same as for ViTModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from ..attention import MultiHeadSelfAttention
from ..layers import FrozenStatsBatchNorm1d, check_pixel_values
from .configuration_face_vit import FaceViTConfig

__all__ = ["FaceViTModel", "FaceViTModelOutput", "FaceViTPreTrainedModel"]


@dataclass
class FaceViTModelOutput(BaseModelOutputWithPooling):
    r"""Outputs of :class:`FaceViTModel`.

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_patches, hidden_size)`):
        The tokens after the final norm (what the head flattens).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
        The face embedding (not L2-normalised; compare embeddings by cosine similarity).
    """


class FaceViTDropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep)
        return hidden_states * mask / keep


def _norm(config: FaceViTConfig) -> nn.Module:
    """LayerNorm over channels ("ln") or BatchNorm1d over token positions ("bn"), as arcface_torch."""
    if config.norm_layer == "bn":
        return FrozenStatsBatchNorm1d(config.num_patches, eps=config.batch_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class FaceViTEmbeddings(nn.Module):
    """Patch projection plus a learned position embedding (no CLS token)."""

    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.projection(pixel_values).flatten(2).transpose(1, 2)
        return self.dropout(tokens + self.position_embeddings)


class FaceViTMLP(nn.Module):
    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation_fn(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class FaceViTLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), with stochastic depth on both branches."""

    def __init__(self, config: FaceViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(config)
        self.attention = MultiHeadSelfAttention.from_config(config)
        self.norm2 = _norm(config)
        self.mlp = FaceViTMLP(config)
        self.drop_path = FaceViTDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path(self.attention(self.norm1(hidden_states)))
        return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))


class FaceViTEncoder(nn.Module):
    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList([FaceViTLayer(config, rate) for rate in rates])

    def forward(self, hidden_states: torch.Tensor, output_hidden_states: bool = False):
        all_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_states += (hidden_states,)
        return hidden_states, all_states


class FaceViTEmbeddingHead(nn.Module):
    """Flattened tokens -> Linear -> BatchNorm1d -> Linear -> BatchNorm1d (arcface_torch's ``feature``)."""

    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__()
        dim, eps = config.hidden_size, config.head_batch_norm_eps
        self.projection = nn.Linear(dim * config.num_patches, dim, bias=False)
        self.projection_norm = FrozenStatsBatchNorm1d(dim, eps=eps)
        self.output = nn.Linear(dim, config.embedding_size, bias=False)
        self.output_norm = FrozenStatsBatchNorm1d(config.embedding_size, eps=eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.projection_norm(self.projection(tokens.flatten(1)))
        return self.output_norm(self.output(hidden))


class FaceViTPreTrainedModel(PreTrainedModel):
    config_class = FaceViTConfig
    config: FaceViTConfig
    base_model_prefix = "face_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["FaceViTLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, FaceViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)


class FaceViTModel(FaceViTPreTrainedModel):
    """A ViT producing a face embedding (``pooler_output``) from an aligned face image, as arcface_torch's.

    Build one from a :class:`FaceViTConfig` (random weights), load a folder with ``from_pretrained``, or convert an
    arcface_torch checkpoint with :func:`petal_peft.convert.convert_insightface_vit`.
    """

    def __init__(self, config: FaceViTConfig) -> None:
        super().__init__(config)
        self.embeddings = FaceViTEmbeddings(config)
        self.encoder = FaceViTEncoder(config)
        self.norm = _norm(config)
        self.embedding_head = FaceViTEmbeddingHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.projection

    def _check_pixel_values(self, pixel_values: torch.Tensor | None) -> None:
        check_pixel_values("FaceViTModel", pixel_values, self.config.num_channels, self.config.image_size)

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs
    ) -> FaceViTModelOutput:
        r"""pixel_values [B, C, H, W] normalised as the image processor does -> face embedding in ``pooler_output``."""
        self._check_pixel_values(pixel_values)
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        hidden_states = self.embeddings(pixel_values.to(self.embeddings.projection.weight.dtype))
        hidden_states, all_states = self.encoder(hidden_states, output_hidden_states=output_hidden_states)
        tokens = self.norm(hidden_states)
        return FaceViTModelOutput(
            last_hidden_state=tokens, pooler_output=self.embedding_head(tokens), hidden_states=all_states
        )
