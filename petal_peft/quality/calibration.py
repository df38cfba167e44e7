"""Fit a gate's threshold and temperature from data instead of guessing them (the reference never published its).

The fit is a class-balanced one-dimensional logistic regression of "is high quality" on the raw score, with a
small L2 penalty on the standardised slope so that perfectly separated sets still give a finite, soft gate.
Its decision point becomes the threshold (q = 0.5) and its inverse slope the temperature (score units per logit).
Inputs: two sets (high-quality gallery-like vs low-quality probe-like), as images or as scores, or one set with
labels in [0, 1] (1 = high quality; graded degradation labels may be given as soft targets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .function import build_estimator
from .gate import GATE_MODES

ScoresOrImages = torch.Tensor | Sequence[float]


def _as_scores(values: ScoresOrImages, estimator: torch.nn.Module | None, batch_size: int, name: str) -> torch.Tensor:
    values = values if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=torch.float64)
    if values.dim() == 4:
        if estimator is None:
            raise ValueError(f"`{name}` holds images [N, C, H, W]; pass estimator= to score them.")
        with torch.no_grad():
            chunks = [estimator(values[i : i + batch_size]) for i in range(0, values.shape[0], batch_size)]
        values = torch.cat(chunks) if chunks else values.new_zeros(0)
    if values.dim() != 1:
        raise ValueError(f"`{name}` must be scores [N] or images [N, C, H, W], got shape {tuple(values.shape)}.")
    if values.numel() == 0:
        raise ValueError(f"`{name}` is empty.")
    values = values.detach().to("cpu", torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError(f"`{name}` contains NaN or infinite scores.")
    return values


def fit_logistic(
    scores: torch.Tensor,
    labels: torch.Tensor,
    regularization: float = 1e-2,
    balanced: bool = True,
    iterations: int = 100,
) -> tuple[float, float]:
    """(slope, intercept) of a logistic fit of labels in [0, 1] on scores, in score units.

    ``balanced`` gives both classes equal total weight (equal priors), so the threshold does not move towards
    the smaller set; ``False`` is the plain maximum-likelihood fit, which recovers a sigmoid the labels were
    drawn from.
    """
    mean, std = scores.mean(), scores.std(unbiased=False)
    if not std > 0:
        raise ValueError("all scores are equal; a gate cannot be calibrated from them.")
    z = (scores - mean) / std
    positive = labels.sum()
    negative = (1 - labels).sum()
    if positive <= 0 or negative <= 0:
        raise ValueError("calibration needs both high-quality and low-quality examples (labels all one class).")
    if balanced:  # each class carries half the total weight
        weights = labels / (2 * positive) + (1 - labels) / (2 * negative)
    else:
        weights = torch.full_like(labels, 1.0 / labels.numel())
    design = torch.stack([z, torch.ones_like(z)], dim=1)
    params = torch.zeros(2, dtype=torch.float64)
    penalty = torch.tensor([regularization, 0.0], dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid(design @ params)
        gradient = design.T @ (weights * (p - labels)) + penalty * params
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + torch.diag(penalty + 1e-12)
        step = torch.linalg.solve(hessian, gradient)
        params = params - step
        if step.abs().max() < 1e-10:
            break
    slope_z, intercept_z = params.tolist()
    slope = slope_z / float(std)
    return slope, intercept_z - slope * float(mean)


def calibrate_gate(
    high: ScoresOrImages | None = None,
    low: ScoresOrImages | None = None,
    *,
    scores: ScoresOrImages | None = None,
    labels: Sequence[float] | torch.Tensor | None = None,
    estimator: str | torch.nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None,
    estimator_kwargs: dict[str, Any] | None = None,
    image_mean: Sequence[float] | float | None = None,
    image_std: Sequence[float] | float | None = None,
    higher_is_better: bool | None = None,
    mode: str = "sigmoid",
    regularization: float = 1e-2,
    balanced: bool = True,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Fit the gate; returns ``{"gate_mode", "gate_threshold", "gate_temperature"}`` for QualityGatedLoraConfig.

    Give either ``high`` and ``low`` (two sets) or ``scores`` and ``labels`` (one set, label 1 = high quality).
    Sets may be raw scores [N] or images [N, C, H, W] (then ``estimator`` scores them; a name is built with
    ``estimator_kwargs``, ``image_mean`` and ``image_std``). The direction comes from the estimator
    (``higher_is_better``), or from ``higher_is_better``, or else from the data. If the data rank the two sets
    against the estimator's direction, that is an error: such a gate would swap the branches.
    ``regularization`` is the L2 penalty on the standardised slope (keeps separable sets finite and the gate soft);
    ``balanced`` weighs both classes equally (see :func:`fit_logistic`).
    """
    if mode not in GATE_MODES:
        raise ValueError(f"mode must be one of {GATE_MODES}, got {mode!r}.")
    module = None
    if estimator is not None:
        module = build_estimator(estimator, estimator_kwargs, image_mean, image_std)
        higher_is_better = bool(getattr(module, "higher_is_better", True))
    if (high is None) != (low is None):
        raise ValueError("pass both `high` and `low`, or `scores` with `labels`.")
    if high is not None:
        if scores is not None or labels is not None:
            raise ValueError("pass either `high` and `low`, or `scores` with `labels`, not both.")
        high_scores = _as_scores(high, module, batch_size, "high")
        low_scores = _as_scores(low, module, batch_size, "low")
        all_scores = torch.cat([high_scores, low_scores])
        all_labels = torch.cat([torch.ones_like(high_scores), torch.zeros_like(low_scores)])
    elif scores is not None and labels is not None:
        all_scores = _as_scores(scores, module, batch_size, "scores")
        all_labels = torch.as_tensor(labels).detach().to("cpu", torch.float64).flatten()
        if all_labels.shape != all_scores.shape:
            raise ValueError(f"`labels` has {all_labels.numel()} values for {all_scores.numel()} scores.")
        if not torch.isfinite(all_labels).all() or (all_labels < 0).any() or (all_labels > 1).any():
            raise ValueError("`labels` must lie in [0, 1] (1 = high quality, 0 = low quality).")
    else:
        raise ValueError("calibrate_gate needs `high` and `low`, or `scores` and `labels`.")

    slope, intercept = fit_logistic(all_scores, all_labels, regularization, balanced)
    if slope == 0:
        raise ValueError("the scores do not separate high from low quality at all (fitted slope 0).")
    if higher_is_better is not None and (slope > 0) != bool(higher_is_better):
        direction = "higher" if higher_is_better else "lower"
        raise ValueError(
            f"the estimator says {direction} scores are better, but the high-quality set scores "
            f"{'lower' if higher_is_better else 'higher'} on average; check which set is which."
        )
    threshold = -intercept / slope
    temperature = 1.0 / abs(slope)
    if mode == "linear":
        temperature *= 4.0  # same slope at the threshold as the sigmoid: sigmoid'(0) = 1/4
    elif mode == "paper":
        temperature = 1.0  # the reference rule has no temperature
    if not (math.isfinite(threshold) and math.isfinite(temperature)):
        raise ValueError("gate calibration did not converge to finite values.")
    return {"gate_mode": mode, "gate_threshold": float(threshold), "gate_temperature": float(temperature)}


def separation_auc(high: torch.Tensor, low: torch.Tensor, higher_is_better: bool = True) -> float:
    """Probability that a random high-quality image scores better than a random low-quality one (ties = 1/2)."""
    high = torch.as_tensor(high, dtype=torch.float64).flatten()
    low = torch.as_tensor(low, dtype=torch.float64).flatten()
    if not higher_is_better:
        high, low = -high, -low
    diff = high[:, None] - low[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def calibrate_gate_on_images(
    sharp: torch.Tensor,
    degraded: torch.Tensor,
    estimator: str | torch.nn.Module = "resolution",
    *,
    estimator_kwargs: dict[str, Any] | None = None,
    image_mean: Sequence[float] | float | None = None,
    image_std: Sequence[float] | float | None = None,
    mode: str = "sigmoid",
    batch_size: int = 256,
) -> dict[str, Any]:
    """The gate calibrated on sharp images against their degraded copies, with how well the estimator tells them
    apart: what training, ``petal-peft calibrate`` and the benchmark all use.

    Args:
        sharp: normalised pixel values [N, C, H, W] of sharp (gallery-like) images.
        degraded: the same kind of tensor for degraded (probe-like) copies.
        estimator: a registered estimator name or module.
        estimator_kwargs: extra arguments of a named estimator.
        image_mean: normalisation mean of the pixel values.
        image_std: normalisation std of the pixel values.
        mode: the gate to fit (``sigmoid``, ``linear`` or ``paper``).
        batch_size: images scored at once.

    Returns:
        ``gate_mode``, ``gate_threshold``, ``gate_temperature`` (the QualityGatedLoraConfig fields), plus
        ``separation_auc`` (chance that a sharp image scores better than a degraded one), the median scores of
        both sets (``score_sharp_median``, ``score_low_median``) and ``num_images`` (per set).
    """
    module = build_estimator(estimator, estimator_kwargs, image_mean, image_std)
    higher = bool(getattr(module, "higher_is_better", True))
    high_scores = _as_scores(sharp, module, batch_size, "sharp")
    low_scores = _as_scores(degraded, module, batch_size, "degraded")
    gate = calibrate_gate(high_scores, low_scores, higher_is_better=higher, mode=mode)
    gate["separation_auc"] = separation_auc(high_scores, low_scores, higher_is_better=higher)
    gate["score_sharp_median"] = float(high_scores.median())
    gate["score_low_median"] = float(low_scores.median())
    gate["num_images"] = int(high_scores.numel())
    return gate


def gate_quality_range(
    settings: dict[str, Any], images: torch.Tensor, batch_size: int = 256
) -> tuple[float, float] | None:
    """(lowest, highest) q that a gate (an adapter's ``gate_settings()``) gives ``images``; None when the
    settings name no estimator. A range of almost zero width means the gate is not calibrated for these images:
    every image lands on the same branch mix, and the other branch learns nothing."""
    from .function import quality_fn_from_settings

    fn = quality_fn_from_settings(settings)
    if fn is None:
        return None
    with torch.no_grad():
        q = torch.cat([fn(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])
    return float(q.min()), float(q.max())
