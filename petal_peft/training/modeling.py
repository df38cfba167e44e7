"""The model being trained: a frozen backbone with a quality-gated adapter, plus a margin head.

The head is not part of the base model and is thrown away for evaluation, so it stays a separate module
(saved with ``head.save_pretrained`` next to the adapter). Both live in one ``nn.Module`` only so that a
single DDP wrapper synchronises all trainable tensors in one pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..embedding.extractor import pooled_embedding
from ..embedding.loading import BaseModelInfo, read_image_settings
from ..embedding.loading import load_base_model as _load_base_model
from .config import FaceAdapterTrainingConfig

__all__ = [
    "BaseModelInfo",
    "FaceEmbeddingClassifier",
    "backbone_parameter_counts",
    "build_backbone",
    "build_lora_config",
    "build_plain_lora_config",
    "embedding_size",
    "load_base_model",
    "resolve_image_settings",
]


def resolve_image_settings(config: FaceAdapterTrainingConfig) -> BaseModelInfo:
    """Input size and normalisation of the run's base model (see :func:`petal_peft.embedding.read_image_settings`)."""
    return read_image_settings(config.base_model, config.image_size)


def load_base_model(config: FaceAdapterTrainingConfig) -> nn.Module:
    """The run's pretrained backbone: the embedded small face ViT, or ``AutoModel.from_pretrained(base_model)``."""
    return _load_base_model(config.base_model, progress=config.progress_bar)


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
        gate_threshold=0.0 if config.gate_threshold is None else config.gate_threshold,
        gate_temperature=1.0 if config.gate_temperature is None else config.gate_temperature,
        image_mean=info.image_mean,
        image_std=info.image_std,
    )


def _resolved_target_modules(config: FaceAdapterTrainingConfig, base: nn.Module) -> Any:
    """The target modules the quality-gated adapter would use on ``base`` (flags, a layer-group expression such
    as ``stem+attention``, else the default: see :mod:`petal_peft.tuner.targets`)."""
    from ..tuner.targets import resolve_default_targets, resolve_target_modules

    if config.target_modules:
        return resolve_target_modules(base, list(config.target_modules))

    targets = resolve_default_targets(base)
    if targets is None:
        model_type = getattr(getattr(base, "config", None), "model_type", None)
        raise ValueError(
            f"found no attention query/key/value projections to adapt in {type(base).__name__} (model type "
            f"{model_type!r}): pass --target_modules."
        )
    return targets


def check_target_modules(config: FaceAdapterTrainingConfig, base: nn.Module) -> None:
    """Every ``--target_modules`` entry must name a module of ``base`` (a typo otherwise trains fewer layers)."""
    if not config.target_modules:
        return
    from ..tuner.targets import linear_layer_summary, resolve_target_modules, unmatched_targets

    targets = resolve_target_modules(base, list(config.target_modules))
    missing = unmatched_targets(base, targets)
    if missing:
        raise ValueError(
            f"--target_modules {' '.join(missing)}: no module of {type(base).__name__} has that name. Its linear "
            f"and conv layers include: {linear_layer_summary(base)}."
        )


def build_plain_lora_config(config: FaceAdapterTrainingConfig, base: nn.Module) -> Any:
    """PEFT's plain LoRA baseline: rank ``2 * lora_r`` on the same modules, so it trains exactly as many
    parameters as the dual-branch adapter (two rank-r branches), with the same scale ``lora_alpha / lora_r``."""
    from peft import LoraConfig

    return LoraConfig(
        r=2 * config.lora_r,
        lora_alpha=2 * config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_resolved_target_modules(config, base),
        init_lora_weights=config.init_weights_value(),
    )


def build_backbone(base: nn.Module, config: FaceAdapterTrainingConfig, info: BaseModelInfo) -> nn.Module:
    """The trainable backbone for ``config.finetune_method``.

    ``quality_gated``: a PeftModel with the quality-gated adapter (base frozen); ``lora``: a PeftModel with
    plain LoRA (base frozen); ``full``: the base itself with every weight trainable (no PEFT).
    """
    from peft import get_peft_model

    method = config.finetune_method
    if method != "full":
        check_target_modules(config, base)
    if method == "quality_gated":
        return get_peft_model(base, build_lora_config(config, info))
    if method == "lora":
        return get_peft_model(base, build_plain_lora_config(config, base))
    if method == "full":
        for param in base.parameters():
            param.requires_grad_(True)
        return base
    raise ValueError(f"unknown finetune_method {method!r}.")


def backbone_parameter_counts(backbone: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of a backbone; for PEFT models the total is the frozen base plus adapter."""
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in backbone.parameters())
    return trainable, total


class FaceEmbeddingClassifier(nn.Module):
    """``backbone`` (a PeftModel) -> pooled embedding -> ``head`` margin logits (``head`` None: the label-free
    ``distill`` objective trains no head)."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, pixel_values: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if quality is None else {"quality": quality}
        return pooled_embedding(self.backbone(pixel_values=pixel_values, **kwargs))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        quality: torch.Tensor | None = None,
        with_embeddings: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Margin logits; with ``with_embeddings``, ``(embeddings, logits or None)`` from the same forward."""
        embeddings = self.embed(pixel_values, quality)
        logits = self.head(embeddings, labels) if self.head is not None else None
        return (embeddings, logits) if with_embeddings else logits
