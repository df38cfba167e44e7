"""Optional dependencies (pyproject extras): imported only where needed, with one way to say what to install.

petal-peft is installed from its source repository, so the hint names the extra as ``pip install -e '.[x]'``
run in the clone (``onnx`` for export and onnxruntime, ``align`` for dlib face alignment, ``plots`` for
matplotlib).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "install_hint", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def install_hint(extra: str) -> str:
    """How to install the ``extra`` of petal-peft (from the clone it was installed from)."""
    return f"in your petal-peft clone run: pip install -e '.[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``purpose`` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs the `{module}` package, which is not installed ({install_hint(extra)})."
        ) from err
