"""The face IResNet: insightface arcface_torch's IResNet written as a transformers model.

Module names are insightface's own (``conv1``, ``bn1``, ``prelu``, ``layer{1..4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3}``,
``layer{s}.0.downsample.{0,1}``, ``bn2``, ``fc``, ``features``), so an arcface_torch ``backbone.pth`` loads key for
key and PEFT targets read as they do in insightface code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from ..layers import FrozenStatsBatchNorm1d, FrozenStatsBatchNorm2d
from .configuration_face_iresnet import FaceIResNetConfig

__all__ = ["FaceIResNetModel", "FaceIResNetModelOutput", "FaceIResNetPreTrainedModel"]


@dataclass
class FaceIResNetModelOutput(BaseModelOutputWithPooling):
    r"""Outputs of :class:`FaceIResNetModel`.

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, hidden_sizes[-1], side, side)`):
        The last feature map after the head's BatchNorm2d (what the head flattens; side 7 at 112 px).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
        The face embedding (not L2-normalised; compare embeddings by cosine similarity).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        With ``output_hidden_states``: the stem's output, then each stage's.
    """


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class FaceIResNetBlock(GradientCheckpointingLayer):
    """insightface's ``IBasicBlock``: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (strided) -> BN, plus the shortcut
    (the identity, or a strided 1 x 1 conv and BN where the shape changes)."""

    def __init__(self, config: FaceIResNetConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        eps = config.batch_norm_eps
        self.bn1 = FrozenStatsBatchNorm2d(in_channels, eps=eps)
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn2 = FrozenStatsBatchNorm2d(out_channels, eps=eps)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, stride)
        self.bn3 = FrozenStatsBatchNorm2d(out_channels, eps=eps)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                FrozenStatsBatchNorm2d(out_channels, eps=eps),
            )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.bn1(hidden_states)
        out = self.prelu(self.bn2(self.conv1(out)))
        out = self.bn3(self.conv2(out))
        shortcut = hidden_states if self.downsample is None else self.downsample(hidden_states)
        return out + shortcut


class FaceIResNetFeatureNorm(FrozenStatsBatchNorm1d):
    """The embedding's BatchNorm1d, whose scale insightface fixes at 1 and never trains (its shift does train).

    The scale is used detached, so it stays fixed whatever its ``requires_grad`` (a loaded model's parameters may
    come back trainable); whether the layer counts as frozen depends on its shift alone.
    """

    def _trained_parameters(self) -> list[torch.Tensor]:
        return [self.bias]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        batch_statistics = self.training and self.bias.requires_grad
        momentum = self.momentum
        if batch_statistics:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as nn.BatchNorm1d
                momentum = 1.0 / float(self.num_batches_tracked)
        normed = F.batch_norm(
            input,
            self.running_mean,
            self.running_var,
            None,
            None,
            training=batch_statistics,
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
        )
        return normed * self.weight.detach() + self.bias


class FaceIResNetPreTrainedModel(PreTrainedModel):
    config_class = FaceIResNetConfig
    config: FaceIResNetConfig
    base_model_prefix = "face_iresnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["FaceIResNetBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, (nn.Linear, nn.Conv2d)):  # variance-preserving, so a random deep model stays finite
            fan_in = module.weight[0].numel()
            init.normal_(module.weight, mean=0.0, std=fan_in**-0.5)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)


class FaceIResNetModel(FaceIResNetPreTrainedModel):
    """An IResNet producing a face embedding (``pooler_output``) from an aligned face image, as insightface's.

    Build one from a :class:`FaceIResNetConfig` (random weights), load a folder with ``from_pretrained``, or convert
    an arcface_torch ``backbone.pth`` with :func:`petal_peft.convert.convert_insightface_iresnet`.
    """

    def __init__(self, config: FaceIResNetConfig) -> None:
        super().__init__(config)
        eps = config.batch_norm_eps
        self.conv1 = _conv3x3(config.num_channels, config.stem_channels)
        self.bn1 = FrozenStatsBatchNorm2d(config.stem_channels, eps=eps)
        self.prelu = nn.PReLU(config.stem_channels)
        in_channels = config.stem_channels
        self.stage_names = []
        for index, (width, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            blocks = [FaceIResNetBlock(config, in_channels, width, stride=2)]
            blocks += [FaceIResNetBlock(config, width, width, stride=1) for _ in range(depth - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{index + 1}")
            in_channels = width
        self.bn2 = FrozenStatsBatchNorm2d(in_channels, eps=eps)
        self.dropout = nn.Dropout(config.head_dropout_prob)
        self.fc = nn.Linear(in_channels * config.feature_map_size**2, config.embedding_size)
        self.features = FaceIResNetFeatureNorm(config.embedding_size, eps=eps)
        self.post_init()
        self.features.weight.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.conv1

    def _check_pixel_values(self, pixel_values: torch.Tensor | None) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"FaceIResNetModel needs pixel_values as a tensor [B, C, H, W], got {type(pixel_values).__name__}."
            )
        size = self.config.image_size
        expected = (self.config.num_channels, size, size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"FaceIResNetModel expects pixel_values of shape [B, {expected[0]}, {size}, {size}] (its embedding "
                f"head flattens a fixed feature map), got {tuple(pixel_values.shape)}. Resize the faces with the "
                "image processor saved beside the model."
            )

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs
    ) -> FaceIResNetModelOutput:
        r"""pixel_values [B, C, H, W] normalised as the image processor does -> face embedding in ``pooler_output``."""
        self._check_pixel_values(pixel_values)
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        hidden = self.prelu(self.bn1(self.conv1(pixel_values.to(self.conv1.weight.dtype))))
        all_states = (hidden,) if output_hidden_states else None
        for name in self.stage_names:
            hidden = getattr(self, name)(hidden)
            if output_hidden_states:
                all_states += (hidden,)
        feature_map = self.bn2(hidden)
        embedding = self.features(self.fc(self.dropout(feature_map.flatten(1))))
        return FaceIResNetModelOutput(last_hidden_state=feature_map, pooler_output=embedding, hidden_states=all_states)
