"""The one way to load a base model and a quality-gated adapter (training, evaluation, export, inference and the
benchmark all use it), with errors that say what is wrong.

The adapter goes through the tuner's checked loader (:func:`petal_peft.tuner.load_quality_gated_adapter`), which
names a damaged folder, a plain-LoRA folder or an adapter made for another base model
(:class:`~petal_peft.tuner.AdapterMismatchError`) instead of failing inside PEFT or torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from petal_peft.tuner.loading import AdapterMismatchError, describe_model, load_quality_gated_adapter

__all__ = [
    "AdapterMismatchError",
    "BaseModelInfo",
    "describe_model",
    "is_quality_gated",
    "load_adapter",
    "load_base_model",
    "read_image_settings",
]

_DEFAULT_MEAN = [0.5, 0.5, 0.5]
_DEFAULT_STD = [0.5, 0.5, 0.5]
#: the name the shipped small face ViT goes by where a base model is described
SHIPPED_BASE_DESCRIPTION = "petal-peft small face ViT (embedded default)"


def load_adapter(base: nn.Module, adapter_path: str | os.PathLike) -> nn.Module:
    """The quality-gated adapter on ``base`` in eval mode (the tuner's checked loader), or an error naming the
    mismatch."""
    import petal_peft  # noqa: F401  (registers the quality-gated tuner with PEFT)

    return load_quality_gated_adapter(base, adapter_path).eval()


def is_quality_gated(model: nn.Module) -> bool:
    configs = getattr(model, "peft_config", None) or {}
    return any(hasattr(config, "gate_settings") for config in configs.values())


def load_base_model(
    model: str | os.PathLike | nn.Module | None, *, progress: bool = True, **from_pretrained_kwargs: Any
) -> nn.Module:
    """The base model in eval mode.

    Args:
        model: a model (returned as is), a local folder or Hub id (``AutoModel.from_pretrained``; a local folder
            must hold ``config.json``), or None for the small face ViT shipped with petal-peft.
        progress: show progress if the shipped base must be built (only for non-default settings).
        **from_pretrained_kwargs: passed to ``AutoModel.from_pretrained`` (e.g. ``dtype``).

    Returns:
        The model, in eval mode.
    """
    if isinstance(model, nn.Module):
        return model.eval()
    if model is None:
        from petal_peft.recipes.synthetic_base import get_pretrained_base

        base, _ = get_pretrained_base(progress=progress)
        return base.eval()
    from transformers import AutoModel

    path = os.fspath(model)
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} is not a transformers model folder: it has no config.json.")
    return AutoModel.from_pretrained(path, **from_pretrained_kwargs).eval()


@dataclass
class BaseModelInfo:
    """What training and the benchmark need to know about a base model's input."""

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


def read_image_settings(model: str | os.PathLike | None, image_size: int | None = None) -> BaseModelInfo:
    """Input size and normalisation of a base model, read without loading its weights.

    Args:
        model: a local folder or Hub id, or None for the shipped small face ViT.
        image_size: overrides the model's own input size.

    Returns:
        From the image processor saved with the model when there is one, else from its config (mean = std = 0.5).
    """
    if model is None:
        from petal_peft.recipes.synthetic_base import PretrainSettings

        ps = PretrainSettings().processor_settings()
        return BaseModelInfo(
            SHIPPED_BASE_DESCRIPTION,
            int(image_size or ps["image_size"]),
            list(ps["image_mean"]),
            list(ps["image_std"]),
            False,
        )
    from transformers import AutoConfig, AutoImageProcessor

    name = os.fspath(model)
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
    size = image_size or _side(getattr(vision, "image_size", None)) or size
    if not size:
        raise ValueError(f"cannot tell the input size of {name}: pass --image_size.")
    return BaseModelInfo(name, int(size), [float(v) for v in mean], [float(v) for v in std], not os.path.exists(name))
