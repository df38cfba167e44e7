"""petal-peft: PETALface quality-gated dual-LoRA adapters as a PEFT extension.

``import petal_peft`` registers the ``QUALITY_GATED_LORA`` adapter type with PEFT and the built-in quality
estimators and gates, so that ``peft.get_peft_model`` and ``PeftModel.from_pretrained`` work with it.
"""

from __future__ import annotations

import sys as _sys

__version__ = "0.1.0"


def _started_as_cli() -> bool:
    """True while the ``petal-peft`` command (or ``python -m petal_peft.cli``) starts: it finishes this import
    itself once its arguments are parsed, so that ``--help`` and ``--version`` never load torch."""
    main = _sys.modules.get("__main__")
    if getattr(main, "__name__", None) != "__main__":  # a spawned worker process re-running the main script
        return False
    script = str(getattr(main, "__file__", "") or "").replace("\\", "/").rsplit("/", 1)[-1]
    if script in ("petal-peft", "petal-peft.exe", "petal-peft-script.py"):
        return True
    argv = list(getattr(_sys, "orig_argv", []))
    return "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["petal_peft.cli"]


def _finish_import() -> None:
    """The heavy part of ``import petal_peft``: registers the tuner with PEFT, the face models with
    transformers' Auto classes and the quality estimators and gates (idempotent)."""
    global _finished
    if _finished:
        return
    _finished = True
    # `quality` registers the built-in quality estimators and gates by name, where the tuner finds them; `models`
    # registers the face backbones with transformers' Auto classes and their default target modules.
    from . import models, quality, registry  # noqa: F401
    from .tuner import (  # noqa: F401
        QUALITY_GATED_LORA,
        QualityGatedConv2d,
        QualityGatedLayer,
        QualityGatedLinear,
        QualityGatedLoraConfig,
        QualityGatedLoraModel,
        export_proxy_encoders,
        resolve_target_modules,
        target_module_groups,
    )
    from .tuner.proxy import merged_encoder  # noqa: F401

    globals().update({name: value for name, value in locals().items() if name in __all__})


def __getattr__(name: str):
    if name in __all__ and not _finished:
        _finish_import()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "QUALITY_GATED_LORA",
    "QualityGatedConv2d",
    "QualityGatedLayer",
    "QualityGatedLinear",
    "QualityGatedLoraConfig",
    "QualityGatedLoraModel",
    "__version__",
    "quality",
    "export_proxy_encoders",
    "merged_encoder",
    "models",
    "registry",
    "resolve_target_modules",
    "target_module_groups",
]

_finished = False
if not _started_as_cli():
    _finish_import()
