"""Carrying the per-image quality from the model call to every gated layer.

transformers models silently ignore unknown keyword arguments, and PEFT's own per-sample mechanism refuses
training mode, so the quality travels outside the call signature: a forward pre-hook on the wrapped model pops
``quality=`` (or computes it), validates it once, and stores it in one :class:`QualityState` that all gated layers
of that model read. A post-hook clears it, so a stale value can never leak into a later call.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

QualityLike = torch.Tensor | float | Sequence[float]


def _is_compiling() -> bool:
    return bool(getattr(torch.compiler, "is_compiling", lambda: False)())


def validate_quality(
    quality: QualityLike,
    batch_size: int | None = None,
    device: torch.device | None = None,
    name: str = "quality",
    bounded: bool = True,
) -> torch.Tensor:
    """Return ``quality`` as a float tensor [B] in [0, 1], or raise an error that names the problem.

    ``bounded=False`` (an adapter configured with ``allow_unbounded_quality=True``) accepts any finite value.
    """
    if isinstance(quality, bool) or (isinstance(quality, torch.Tensor) and quality.dtype == torch.bool):
        raise TypeError(f"`{name}` must be a float in [0, 1] per image, got a boolean.")
    if isinstance(quality, numbers.Real):
        if batch_size is None:
            raise ValueError(f"A scalar `{name}` needs pixel_values to know the batch size.")
        quality = torch.full((batch_size,), float(quality), device=device)
    elif isinstance(quality, (list, tuple)):
        quality = torch.tensor([float(v) for v in quality], device=device)
    elif not isinstance(quality, torch.Tensor):
        raise TypeError(f"`{name}` must be a float tensor of shape [batch], got {type(quality).__name__}.")
    if not quality.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {quality.dtype}.")
    if quality.dim() == 2 and quality.shape[1] == 1:
        quality = quality[:, 0]
    if quality.dim() == 0 and batch_size is not None:
        quality = quality.expand(batch_size)
    if quality.dim() != 1:
        raise ValueError(f"`{name}` must have shape [batch], got {tuple(quality.shape)}.")
    if batch_size is not None and quality.shape[0] != batch_size:
        raise ValueError(f"`{name}` has {quality.shape[0]} values but the batch has {batch_size} images.")
    if quality.shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    if device is not None and quality.device != torch.device(device):
        raise ValueError(f"`{name}` is on {quality.device} but pixel_values are on {device}; move it there first.")
    # Value checks read the data (a host sync, and a graph break under torch.compile): eager mode only.
    if not _is_compiling():
        if not torch.isfinite(quality).all():
            raise ValueError(f"`{name}` contains NaN or infinite values.")
        if bounded and ((quality < 0).any() or (quality > 1).any()):
            low, high = float(quality.min()), float(quality.max())
            raise ValueError(
                f"`{name}` must lie in [0, 1] (1 = high quality); got values in [{low:.4g}, {high:.4g}]. (Values "
                "outside [0, 1] extrapolate the two branches; an adapter opts in with allow_unbounded_quality=True.)"
            )
    return quality


class QualityState:
    """The quality of the images in the current forward pass, shared by all gated layers of one model."""

    def __init__(self) -> None:
        self.quality: torch.Tensor | None = None

    def rows(self, num_rows: int) -> torch.Tensor:
        """The per-row quality for a layer input with ``num_rows`` leading rows.

        Token layers see one row per image; Swin's window attention sees ``B * num_windows`` rows, batch-major,
        so each image's value is repeated for its windows.
        """
        quality = self.quality
        if quality is None:
            raise ValueError(
                "No `quality` for this forward pass. Call the model with quality=<float tensor [batch] in [0, 1]>, "
                "or configure QualityGatedLoraConfig(quality_estimator=...) so it is computed from pixel_values."
            )
        batch = quality.shape[0]
        if num_rows == batch:
            return quality
        if num_rows % batch != 0:
            raise ValueError(
                f"A gated layer received {num_rows} rows, which is not a multiple of the {batch} `quality` values; "
                "the layer input's first dimension must be the batch (or batch x windows)."
            )
        return quality.repeat_interleave(num_rows // batch)


def capture_quality_for_recompute(state: QualityState, checkpoint_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a gradient-checkpointing function so that its backward recomputation sees the forward-time quality.

    Without this, the recomputation reads whatever quality is stored when backward runs (e.g. after a second
    forward), and the gradients are wrong.
    """
    if getattr(checkpoint_fn, "_petal_captures_quality", False):
        return checkpoint_fn

    def checkpoint_with_quality(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        captured = state.quality

        def replay(*inner_args: Any, **inner_kwargs: Any) -> Any:
            previous = state.quality
            state.quality = captured
            try:
                return function(*inner_args, **inner_kwargs)
            finally:
                state.quality = previous

        return checkpoint_fn(replay, *args, **kwargs)

    checkpoint_with_quality._petal_captures_quality = True  # type: ignore[attr-defined]
    return checkpoint_with_quality
