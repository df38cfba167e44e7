"""Loading a saved quality-gated adapter with one clear error per problem, before PEFT sees the folder.

``PeftModel.from_pretrained`` on a broken folder fails far from the cause: a folder without weights becomes
"Repo id must be in the form ...", a truncated file a bare ``SafetensorError``, a plain LoRA adapter loads
as LoRA with a warning. :func:`check_adapter_folder` names the folder and the problem instead, and
:func:`load_quality_gated_adapter` is the loader petal-peft's own entry points use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from . import PEFT_TYPE_NAME

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "AdapterMismatchError",
    "check_adapter_folder",
    "describe_model",
    "load_quality_gated_adapter",
]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


class AdapterMismatchError(ValueError):
    """The adapter was trained on a different base model (architecture, width, depth or targets)."""


def describe_model(model: nn.Module) -> str:
    """``ViTModel (vit, hidden_size=128, layers=4)``: enough to tell two base models apart in an error."""
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
    return type(model).__name__ + (f" ({details})" if details else "")


def _looks_local(spec: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a path."""
    return spec.startswith((".", "/", "~")) or spec.endswith(("/", os.sep)) or spec.count("/") > 1 or "\\" in spec


def check_adapter_folder(path: str | os.PathLike) -> dict[str, Any] | None:
    """Check a local adapter folder (config readable, a quality-gated adapter, weights present and whole) and
    return its config; None for a Hub id (PEFT downloads and checks those)."""
    spec = os.fspath(path)
    folder = Path(spec).expanduser()
    if not folder.exists():
        if _looks_local(spec):
            raise FileNotFoundError(f"adapter folder {spec} does not exist.")
        return None
    if not folder.is_dir():
        raise NotADirectoryError(
            f"adapter {spec} is a file; give the folder holding {ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME}."
        )
    config_path = folder / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not an adapter folder: {ADAPTER_CONFIG_NAME} is missing.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} does not hold a JSON object.")
    peft_type = config.get("peft_type")
    if peft_type != PEFT_TYPE_NAME:
        raise ValueError(
            f"{folder} holds a {peft_type!r} adapter ({ADAPTER_CONFIG_NAME} says peft_type={peft_type!r}), not a "
            f"quality-gated adapter (peft_type {PEFT_TYPE_NAME!r}): load it with PEFT itself, or give the folder "
            "of a petal-peft adapter."
        )
    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        pickled = [name for name in _PICKLED_WEIGHTS if (folder / name).is_file()]
        hint = (
            f" ({pickled[0]} is a pickle, which petal-peft does not load: save the adapter again with "
            "safe_serialization=True)"
            if pickled
            else ""
        )
        raise FileNotFoundError(f"{folder}: the adapter weights {ADAPTER_WEIGHTS_NAME} are missing{hint}.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} is damaged or truncated ({err}).") from None
    return config


def load_quality_gated_adapter(base_model: nn.Module, path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """``PeftModel.from_pretrained(base_model, path)`` for a quality-gated adapter, with the folder checked
    first; an adapter made for another base model raises :class:`AdapterMismatchError`, any other failure one
    ValueError, each naming the folder."""
    from peft import PeftModel
    from safetensors import SafetensorError

    config = check_adapter_folder(path)
    spec = os.fspath(path)
    trained_on = ((config or {}).get("auto_mapping") or {}).get("base_model_class")
    if trained_on and trained_on != type(base_model).__name__:
        raise AdapterMismatchError(
            f"adapter {spec} was trained on a {trained_on}, but the base model is a {describe_model(base_model)}; "
            "pass the base model the adapter was trained on."
        )
    try:
        return PeftModel.from_pretrained(base_model, spec, **kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if "do not match this model" in str(message) or "other layer sizes" in str(message):
            raise AdapterMismatchError(
                f"adapter {spec} does not fit the base model {describe_model(base_model)}: {message}"
            ) from err
        raise ValueError(f"cannot load the adapter {spec}: {message}") from err
