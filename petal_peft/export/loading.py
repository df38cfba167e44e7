"""Loading a base model and a quality-gated adapter for export or inference, with errors that say what is wrong.

The adapter goes through the tuner's checked loader (:func:`petal_peft.tuner.load_quality_gated_adapter`), which
names a damaged folder, a plain-LoRA folder or an adapter made for another base model
(:class:`~petal_peft.tuner.AdapterMismatchError`) instead of failing inside PEFT or torch.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from petal_peft.tuner.loading import AdapterMismatchError, describe_model, load_quality_gated_adapter

__all__ = ["AdapterMismatchError", "describe_model", "is_quality_gated", "load_adapter", "load_base_model"]


def load_adapter(base: nn.Module, adapter_path: str | os.PathLike) -> nn.Module:
    """The quality-gated adapter on ``base`` in eval mode (the tuner's checked loader), or an error naming the
    mismatch."""
    import petal_peft  # noqa: F401  (registers the quality-gated tuner with PEFT)

    return load_quality_gated_adapter(base, adapter_path).eval()


def is_quality_gated(model: nn.Module) -> bool:
    configs = getattr(model, "peft_config", None) or {}
    return any(hasattr(config, "gate_settings") for config in configs.values())


def load_base_model(model: str | os.PathLike | nn.Module, **from_pretrained_kwargs: Any) -> nn.Module:
    """A base model as is, or loaded with ``AutoModel.from_pretrained`` from a folder or Hub id, in eval mode."""
    if isinstance(model, nn.Module):
        return model.eval()
    from transformers import AutoModel

    path = os.fspath(model)
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} is not a transformers model folder: it has no config.json.")
    return AutoModel.from_pretrained(path, **from_pretrained_kwargs).eval()
