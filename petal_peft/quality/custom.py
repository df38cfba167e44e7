"""Caller-supplied quality: any callable as an estimator, registered under a name so configs can refer to it.

An adapter config can only store names, so a function becomes persistent by registering it
(``register_quality_function("my_iqa", fn, higher_is_better=True)``) in the code that saves and in the code
that loads. Nothing is ever imported from a name written in a config. Precomputed scores need no estimator at all:
pass ``quality_score=`` to the model (gate applied) or ``quality=`` (already in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..registry import QUALITY_ESTIMATORS
from .pixels import PixelDecoder

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]


class CallableEstimator(torch.nn.Module):
    """Wraps ``fn(images) -> scores [B]``; ``images`` are intensities in [0, 1] (or the raw input, ``decode=False``)."""

    def __init__(
        self,
        fn: ScoreFunction,
        higher_is_better: bool = True,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        decode: bool = True,
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"`fn` must be callable (images -> scores [B]), got {type(fn).__name__}.")
        self.fn = fn
        self.higher_is_better = bool(higher_is_better)
        self.decode = bool(decode)
        self.decoder = PixelDecoder(image_mean, image_std, min_size=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.decode:
            images = self.decoder(pixel_values)
        else:
            self.decoder.validate(pixel_values)
            images = pixel_values
        scores = self.fn(images)
        scores = torch.as_tensor(scores, dtype=torch.float32, device=pixel_values.device)
        if scores.dim() == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.shape != (pixel_values.shape[0],):
            raise ValueError(
                f"quality function must return one score per image, shape [{pixel_values.shape[0]}], "
                f"got {tuple(scores.shape)}."
            )
        if not torch.isfinite(scores).all():
            raise ValueError("quality function returned NaN or infinite scores.")
        return scores


def register_quality_function(
    name: str, fn: ScoreFunction, higher_is_better: bool = True, decode: bool = True, overwrite: bool = False
) -> None:
    """Register ``fn`` as the estimator ``name`` (usable as QualityGatedLoraConfig(quality_estimator=name))."""

    def factory(image_mean=None, image_std=None, **kwargs) -> CallableEstimator:
        if kwargs:
            raise TypeError(f"quality function {name!r} takes no estimator kwargs, got {sorted(kwargs)}.")
        return CallableEstimator(fn, higher_is_better, image_mean, image_std, decode)

    QUALITY_ESTIMATORS.register(name, factory, overwrite=overwrite)
