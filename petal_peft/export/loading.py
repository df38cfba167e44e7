"""Loading a base model and a quality-gated adapter for export or inference, with errors that say what is wrong.

PEFT reports an adapter trained on another base in three different ways (targets not found, a state-dict size
mismatch, unexpected keys) and some of them deep inside torch. :func:`load_adapter` checks the adapter folder
first and turns each of them into one :class:`AdapterMismatchError` naming the adapter and the base.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterMismatchError(ValueError):
    """The adapter was trained on a different base model (architecture, width, depth or targets)."""


def describe_model(model: nn.Module) -> str:
    """``ViTModel (vit, hidden_size=128, 4 layers)``: enough to tell two bases apart in an error."""
    config = getattr(model, "config", None)
    parts = [getattr(config, "model_type", None)]
    for key in ("hidden_size", "embed_dim"):
        if getattr(config, key, None) is not None:
            parts.append(f"{key}={getattr(config, key)}")
            break
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "depths", None)
    if layers is not None:
        parts.append(f"layers={layers}")
    details = ", ".join(str(p) for p in parts if p is not None)
    return f"{type(model).__name__}" + (f" ({details})" if details else "")


def read_adapter_config(adapter_path: str | os.PathLike) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, after checking the folder holds an adapter at all."""
    path = os.fspath(adapter_path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"adapter folder not found: {path}")
    config_path = os.path.join(path, ADAPTER_CONFIG)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{path} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG} (expected the folder that "
            "model.save_pretrained(...) of a quality-gated adapter wrote)."
        )
    if not any(os.path.isfile(os.path.join(path, name)) for name in ADAPTER_WEIGHTS):
        raise FileNotFoundError(f"{path} has {ADAPTER_CONFIG} but no adapter weights ({ADAPTER_WEIGHTS[0]}).")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from None
    if config.get("peft_type") != "QUALITY_GATED_LORA":
        raise ValueError(
            f"{path} holds a {config.get('peft_type')!r} adapter, not a quality-gated one (peft_type "
            "QUALITY_GATED_LORA); only petal-peft adapters have the gallery/probe proxy encoders and the gate."
        )
    return config


def load_adapter(base: nn.Module, adapter_path: str | os.PathLike) -> nn.Module:
    """``PeftModel.from_pretrained(base, adapter_path)`` in eval mode, or an error naming the mismatch."""
    from peft import PeftModel

    import petal_peft  # noqa: F401  (registers the quality-gated tuner with PEFT)

    config = read_adapter_config(adapter_path)
    path = os.fspath(adapter_path)
    trained_on = (config.get("auto_mapping") or {}).get("base_model_class")
    if trained_on and trained_on != type(base).__name__:
        raise AdapterMismatchError(
            f"adapter {path} was trained on a {trained_on}, but the base model is a {describe_model(base)}; "
            "pass the base model the adapter was trained on."
        )
    try:
        model = PeftModel.from_pretrained(base, path)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise AdapterMismatchError(
            f"adapter {path} does not fit the base model {describe_model(base)}: {first} {detail}".strip()
            + " (was it trained on a different base model, or with other target_modules / r?)"
        ) from err
    return model.eval()


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
