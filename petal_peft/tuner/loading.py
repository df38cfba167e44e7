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

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "check_adapter_folder", "load_quality_gated_adapter"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


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
    first and any failure reported as one ValueError naming the folder."""
    from peft import PeftModel
    from safetensors import SafetensorError

    check_adapter_folder(path)
    try:
        return PeftModel.from_pretrained(base_model, os.fspath(path), **kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"cannot load the adapter {os.fspath(path)}: {message}") from err
