"""The model being trained: a frozen backbone with a quality-gated adapter, plus a margin head.

The head is not part of the base model and is thrown away for evaluation, so it stays a separate module
(saved with ``head.save_pretrained`` next to the adapter). Both live in one ``nn.Module`` only so that a
single DDP wrapper synchronises all trainable tensors in one pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..evaluation.extractor import pooled_embedding
from .config import FaceAdapterTrainingConfig

__all__ = [
    "BaseModelInfo",
    "FaceEmbeddingClassifier",
    "build_lora_config",
    "embedding_size",
    "load_base_model",
    "resolve_image_settings",
]

_DEFAULT_MEAN = [0.5, 0.5, 0.5]
_DEFAULT_STD = [0.5, 0.5, 0.5]


@dataclass
class BaseModelInfo:
    """What the rest of training needs to know about the base model's input."""

    name: str
    image_size: int
    image_mean: list[float]
    image_std: list[float]
    is_hub_id: bool


def _side(size: Any) -> int | None:
    if size is not None and not isinstance(size, (int, float, list, tuple)):
        # dict, or transformers 5's SizeDict (attributes, not keys)
        getter = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
        size = getter("height") or getter("shortest_edge") or getter("width")
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else None


def resolve_image_settings(config: FaceAdapterTrainingConfig) -> BaseModelInfo:
    """Input size and normalisation of the base model, read without loading its weights.

    From the image processor saved with the model when there is one, else from its config (mean = std = 0.5).
    """
    if config.base_model is None:
        from ..zoo.pretrained_base import PretrainSettings

        ps = PretrainSettings().processor_settings()
        return BaseModelInfo(
            "petal-peft small face ViT (embedded default)",
            int(config.image_size or ps["image_size"]),
            list(ps["image_mean"]),
            list(ps["image_std"]),
            False,
        )
    from transformers import AutoConfig, AutoImageProcessor

    name = config.base_model
    model_config = AutoConfig.from_pretrained(name)
    vision = getattr(model_config, "vision_config", None) or model_config
    mean, std, size = _DEFAULT_MEAN, _DEFAULT_STD, None
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    if processor is not None:
        mean = list(getattr(processor, "image_mean", None) or mean)
        std = list(getattr(processor, "image_std", None) or std)
        size = _side(getattr(processor, "crop_size", None)) or _side(getattr(processor, "size", None))
    size = config.image_size or _side(getattr(vision, "image_size", None)) or size
    if not size:
        raise ValueError(f"cannot tell the input size of {name}: pass --image_size.")
    return BaseModelInfo(name, int(size), [float(v) for v in mean], [float(v) for v in std], not os.path.exists(name))


def load_base_model(config: FaceAdapterTrainingConfig) -> nn.Module:
    """The pretrained backbone: the embedded small face ViT, or ``AutoModel.from_pretrained(base_model)``."""
    if config.base_model is None:
        from ..zoo.pretrained_base import get_pretrained_base

        model, _ = get_pretrained_base(progress=config.progress_bar)
        return model
    from transformers import AutoModel

    return AutoModel.from_pretrained(config.base_model)


@torch.no_grad()
def embedding_size(model: nn.Module, image_size: int) -> int:
    """Width of the embedding the head classifies (one dry forward in eval mode, no RNG used)."""
    was_training = model.training
    model.eval()
    try:
        out = model(pixel_values=torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return int(pooled_embedding(out).shape[-1])


def build_lora_config(config: FaceAdapterTrainingConfig, info: BaseModelInfo) -> Any:
    """The QualityGatedLoraConfig the flags describe (normalisation taken from the base model)."""
    from .. import QualityGatedLoraConfig

    return QualityGatedLoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules) if config.target_modules else None,
        init_lora_weights=config.init_weights_value(),
        quality_estimator=config.quality_estimator,
        quality_estimator_kwargs=config.estimator_kwargs(),
        gate_mode=config.gate_mode,
        gate_threshold=config.gate_threshold,
        gate_temperature=config.gate_temperature,
        image_mean=info.image_mean,
        image_std=info.image_std,
    )


class FaceEmbeddingClassifier(nn.Module):
    """``backbone`` (a PeftModel) -> pooled embedding -> ``head`` margin logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, pixel_values: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if quality is None else {"quality": quality}
        return pooled_embedding(self.backbone(pixel_values=pixel_values, **kwargs))

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(self.embed(pixel_values, quality), labels)
