"""The optional ONNX dependencies, imported only when an export or an onnxruntime session needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

ONNX_EXTRA = 'pip install "petal-peft[onnx]"'


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def _require(module: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs the `{module}` package, which is not installed: {ONNX_EXTRA}"
        ) from err


def require_onnx_exporter() -> None:
    """torch's ONNX exporter (``dynamo=True``) needs onnx and onnxscript."""
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")


def require_onnxruntime() -> ModuleType:
    return _require("onnxruntime", "Running an ONNX model")
