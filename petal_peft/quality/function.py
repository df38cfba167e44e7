"""Estimator + gate as one module: pixel_values [B, C, H, W] -> quality q [B] in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..registry import QUALITY_ESTIMATORS
from .custom import CallableEstimator
from .gate import QualityGate, build_gate


def build_estimator(
    estimator: str | torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    estimator_kwargs: dict[str, Any] | None = None,
    image_mean: Sequence[float] | float | None = None,
    image_std: Sequence[float] | float | None = None,
) -> torch.nn.Module:
    """The quality estimator pixel_values -> score per image.

    Args:
        estimator: a registered name (e.g. ``"resolution"``, ``"brisque"``), a module (returned as is), or a plain
            callable on images in [0, 1] (wrapped; higher = better unless it has ``higher_is_better = False``).
        estimator_kwargs: settings of a named estimator (or of the wrapper of a callable).
        image_mean: the model's normalisation mean, so the estimator can undo it.
        image_std: the model's normalisation std.

    Returns:
        The estimator module.
    """
    kwargs = dict(estimator_kwargs or {})
    if isinstance(estimator, str):
        return QUALITY_ESTIMATORS.build(estimator, image_mean=image_mean, image_std=image_std, **kwargs)
    if isinstance(estimator, torch.nn.Module):
        if kwargs:
            raise ValueError("estimator_kwargs only apply to an estimator given by name.")
        return estimator
    if callable(estimator):
        higher = bool(getattr(estimator, "higher_is_better", kwargs.pop("higher_is_better", True)))
        return CallableEstimator(estimator, higher, image_mean, image_std, **kwargs)
    raise TypeError(f"estimator must be a registered name, an nn.Module or a callable, got {type(estimator).__name__}.")


class QualityFunction(torch.nn.Module):
    """q = gate(estimator(pixel_values)), without gradients: the quality is an input, never trained through."""

    def __init__(self, estimator: torch.nn.Module, gate: QualityGate) -> None:
        super().__init__()
        self.estimator = estimator
        self.gate = gate

    @property
    def higher_is_better(self) -> bool:
        return bool(getattr(self.estimator, "higher_is_better", True))

    @torch.no_grad()
    def scores(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.estimator(pixel_values)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.gate(self.estimator(pixel_values))


def build_quality_fn(
    estimator: str | torch.nn.Module | Callable[[torch.Tensor], torch.Tensor] = "resolution",
    estimator_kwargs: dict[str, Any] | None = None,
    gate_mode: str = "sigmoid",
    threshold: float = 0.0,
    temperature: float = 1.0,
    image_mean: Sequence[float] | float | None = None,
    image_std: Sequence[float] | float | None = None,
) -> QualityFunction:
    """The same quality function q = gate(estimator(pixel_values)) the tuner builds from its config's gate fields.

    Args:
        estimator: see :func:`build_estimator`.
        estimator_kwargs: see :func:`build_estimator`.
        gate_mode: a registered gate (``"sigmoid"``, ``"linear"``, ...).
        threshold: the score at which q = 0.5.
        temperature: the gate's softness, in score units.
        image_mean: the model's normalisation mean.
        image_std: the model's normalisation std.

    Returns:
        A :class:`QualityFunction` in eval mode (no gradients flow through it).
    """
    module = build_estimator(estimator, estimator_kwargs, image_mean, image_std)
    higher = bool(getattr(module, "higher_is_better", True))
    gate = build_gate(gate_mode, threshold=threshold, temperature=temperature, higher_is_better=higher)
    return QualityFunction(module, gate).eval()


def quality_fn_from_settings(settings: Mapping[str, Any] | None) -> QualityFunction | None:
    """The quality function an adapter's gate settings (``QualityGatedLoraConfig.gate_settings()``) describe, as
    the tuner builds it; None when they name no estimator (then quality must be given per image)."""
    if not settings or not settings.get("quality_estimator"):
        return None
    return build_quality_fn(
        settings["quality_estimator"],
        dict(settings.get("quality_estimator_kwargs") or {}),
        gate_mode=settings.get("gate_mode", "sigmoid"),
        threshold=float(settings.get("gate_threshold", 0.0)),
        temperature=float(settings.get("gate_temperature", 1.0)),
        image_mean=settings.get("image_mean"),
        image_std=settings.get("image_std"),
    )
