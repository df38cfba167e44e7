"""Where a model runs and how its images are prepared: the device, and the resize / normalisation of its inputs.

Training, evaluation, export and inference all use these, so they live here rather than in one of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .images import ImageTransform

__all__ = ["build_transform", "model_image_size", "processor_normalisation", "resolve_device"]


def model_image_size(model: nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def processor_normalisation(model_path: str) -> tuple[list[float] | None, list[float] | None]:
    """image_mean / image_std from a local ``preprocessor_config.json`` next to the weights, if any."""
    path = os.path.join(model_path, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg.get("image_mean"), cfg.get("image_std")


def build_transform(
    model: nn.Module,
    model_path: str | None = None,
    *,
    image_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    adapter_settings: Mapping[str, Any] | None = None,
) -> ImageTransform:
    """Resize to the model's image size; normalise with (in order of precedence) the explicit values, the
    adapter's image_mean/std, the model folder's preprocessor_config.json, else 0.5 / 0.5."""
    size = (image_size, image_size) if image_size else model_image_size(model)
    if size is None:
        raise ValueError("the model config has no image_size; pass image_size (CLI: --image-size).")
    proc_mean, proc_std = (
        processor_normalisation(model_path) if model_path and os.path.isdir(model_path) else (None, None)
    )
    settings = adapter_settings or {}
    mean = image_mean or settings.get("image_mean") or proc_mean or [0.5]
    std = image_std or settings.get("image_std") or proc_std or [0.5]
    return ImageTransform(size=size, mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]


def resolve_device(device: str | None) -> torch.device:
    """``"auto"`` or None: CUDA where available, else CPU; anything else is passed to ``torch.device``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
