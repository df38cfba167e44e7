"""The optional ONNX dependencies, imported only when an export or an onnxruntime session needs them."""

from __future__ import annotations

from types import ModuleType

from petal_peft.extras import MissingExtraError, install_hint, require

__all__ = ["ONNX_EXTRA", "MissingExtraError", "require_onnx_exporter", "require_onnxruntime"]

ONNX_EXTRA = install_hint("onnx")


def _require(module: str, purpose: str) -> ModuleType:
    return require(module, "onnx", purpose)


def require_onnx_exporter() -> None:
    """torch's ONNX exporter (``dynamo=True``) needs onnx and onnxscript."""
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")


def require_onnxruntime() -> ModuleType:
    return _require("onnxruntime", "Running an ONNX model")
