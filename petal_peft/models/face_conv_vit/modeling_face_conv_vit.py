"""The convolutional-stem face transformer: residual conv stem -> tokens -> pre-norm transformer -> embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..attention import MultiHeadSelfAttention
from ..layers import check_pixel_values
from .configuration_face_conv_vit import FaceConvViTConfig, stem_output_size

__all__ = ["FaceConvViTModel", "FaceConvViTPreTrainedModel"]


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum of two [B, C, H, W] maps, the smaller zero-padded at the end (channels, bottom, right), as dlib adds."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return pad(a) + pad(b)


class FaceConvViTStemUnit(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)); a stride-2 unit average-pools the shortcut 2x2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1 if stride == 1 else 0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.stride == 2 else x
        return F.relu(_add_zero_padded(y, shortcut))


class FaceConvViTStem(nn.Module):
    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(config.num_channels, config.stem_channels, config.stem_kernel_size, stride=2)
        units, channels = [], config.stem_channels
        for out, stride in config.stem_units:
            units.append(FaceConvViTStemUnit(channels, out, stride))
            channels = out
        self.units = nn.ModuleList(units)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(pixel_values)), 3, 2)
        for unit in self.units:
            x = unit(x)
        return x


class FaceConvViTEmbeddings(nn.Module):
    """Stem feature map -> tokens [B, s*s, hidden] with learned position embeddings."""

    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__()
        self.stem = FaceConvViTStem(config)
        self.projection = nn.Linear(config.stem_output_channels, config.hidden_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_tokens, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.num_channels, self.image_size = config.num_channels, config.image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixel_values("FaceConvViTModel", pixel_values, self.num_channels, self.image_size)
        features = self.stem(pixel_values)
        tokens = self.projection(features.flatten(2).transpose(1, 2))
        return self.dropout(tokens + self.position_embeddings)


class FaceConvViTMLP(nn.Module):
    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class FaceConvViTLayer(GradientCheckpointingLayer):
    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MultiHeadSelfAttention.from_config(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FaceConvViTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.attention(self.layernorm_before(hidden_states)))
        return hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))


class FaceConvViTPooler(nn.Module):
    """Mean of the final tokens, then a linear map to the embedding (``pooler.dense``)."""

    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden_states.mean(dim=1))


class FaceConvViTPreTrainedModel(PreTrainedModel):
    config_class = FaceConvViTConfig
    config: FaceConvViTConfig
    base_model_prefix = "face_conv_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["FaceConvViTEmbeddings", "FaceConvViTLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, FaceConvViTEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, std=std)


class FaceConvViTModel(FaceConvViTPreTrainedModel):
    """``forward(pixel_values)`` -> ``BaseModelOutputWithPooling``: ``last_hidden_state`` [B, s*s, hidden] (after
    the final LayerNorm) and ``pooler_output`` [B, embedding_size], the face embedding."""

    def __init__(self, config: FaceConvViTConfig) -> None:
        super().__init__(config)
        self.embeddings = FaceConvViTEmbeddings(config)
        self.layers = nn.ModuleList(FaceConvViTLayer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = FaceConvViTPooler(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        if pixel_values is None:
            raise ValueError("pixel_values is required.")
        dtype = self.embeddings.projection.weight.dtype
        hidden_states = self.embeddings(pixel_values.to(dtype))
        all_hidden = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
        sequence_output = self.layernorm(hidden_states)
        pooled = self.pooler(sequence_output)
        hidden = tuple(all_hidden) if all_hidden is not None else None
        if return_dict is False:
            return tuple(x for x in (sequence_output, pooled, hidden) if x is not None)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled, hidden_states=hidden)


def token_grid(config: FaceConvViTConfig) -> int:
    """Side of the token grid (the stem's output map) for the configured image size."""
    return stem_output_size(config.image_size, config.stem_kernel_size, config.stem_units)
