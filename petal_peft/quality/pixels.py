"""From the model's ``pixel_values`` back to plain intensities in [0, 1].

Quality estimators see exactly what the model sees: a batch normalised by the image processor
(``(x / 255 - mean) / std``). Image statistics such as BRISQUE are defined on raw intensities, so every estimator
first undoes that normalisation here, with one validation that names the problem before torch does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: ITU-R BT.709 luma weights, as ``skimage.color.rgb2gray`` uses them (the BRISQUE reference converts with it).
LUMA_WEIGHTS = (0.2125, 0.7154, 0.0721)

#: What ``image_mean`` / ``image_std`` = None mean: the default of ViT's image processor (pixel_values in [-1, 1]),
#: as QualityGatedLoraConfig documents. Pass ``image_mean=[0.0], image_std=[1.0]`` for float input in [0, 1].
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.5


def _as_stats(values: Sequence[float] | float | None, default: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (default,)
    if isinstance(values, (int, float)):
        values = [values]
    try:
        stats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a list of floats (one per channel), got {values!r}.") from None
    if len(stats) not in (1, 3):
        raise ValueError(f"`{name}` must have 1 or 3 values (one per channel), got {len(stats)}.")
    if name == "image_std" and any(s <= 0 for s in stats):
        raise ValueError(f"`image_std` must be positive, got {stats}.")
    return stats


class PixelDecoder(torch.nn.Module):
    """Validates ``pixel_values`` and returns intensities in [0, 1] as float [B, C, H, W] (C = 1 or 3).

    uint8 input is taken as raw pixels (0..255, no normalisation to undo); floating input is taken as normalised
    with ``image_mean`` / ``image_std``.
    """

    def __init__(
        self,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        min_size: int = 8,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.image_mean = _as_stats(image_mean, DEFAULT_MEAN, "image_mean")
        self.image_std = _as_stats(image_std, DEFAULT_STD, "image_std")
        self.min_size = int(min_size)
        self.compute_dtype = compute_dtype

    def validate(self, pixel_values: torch.Tensor) -> None:
        """Raise a ValueError/TypeError naming ``pixel_values`` for anything the estimators cannot score."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor [B, C, H, W], got {type(pixel_values).__name__}.")
        if pixel_values.dim() != 4:
            raise ValueError(
                f"`pixel_values` must have 4 dimensions [B, C, H, W], got shape {tuple(pixel_values.shape)}."
            )
        batch, channels, height, width = pixel_values.shape
        if batch == 0:
            raise ValueError("`pixel_values` is an empty batch (B = 0); there is no image to score.")
        if channels not in (1, 3):
            raise ValueError(
                f"`pixel_values` must have 1 (grey) or 3 (RGB) channels in dimension 1 ([B, C, H, W]), got {channels}"
                f" (shape {tuple(pixel_values.shape)}); channels-last input needs .permute(0, 3, 1, 2)."
            )
        if height < self.min_size or width < self.min_size:
            raise ValueError(
                f"`pixel_values` images are {height}x{width}; this estimator needs at least "
                f"{self.min_size}x{self.min_size} pixels."
            )
        if pixel_values.dtype == torch.bool or pixel_values.is_complex():
            raise TypeError(f"`pixel_values` must be uint8 or floating point, got {pixel_values.dtype}.")
        if pixel_values.is_floating_point():
            # one cheap reduction first (NaN/inf propagate into the sum); the exact check only if it is not finite.
            # A value check reads the data, which torch.export / torch.compile cannot trace: eager mode only.
            if (
                not torch.compiler.is_compiling()
                and not torch.isfinite(pixel_values.sum())
                and not torch.isfinite(pixel_values).all()
            ):
                raise ValueError("`pixel_values` contains NaN or infinite values.")
        elif pixel_values.dtype != torch.uint8:
            raise TypeError(
                f"`pixel_values` must be uint8 (raw 0..255) or floating point (normalised), got {pixel_values.dtype}."
            )
        if len(self.image_mean) == 3 and channels == 1 and pixel_values.is_floating_point():
            raise ValueError(
                "`pixel_values` has 1 channel but image_mean/image_std have 3 values; configure the estimator with "
                "the grey image processor's single mean/std."
            )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.validate(pixel_values)
        x = pixel_values.to(self.compute_dtype)
        if not pixel_values.is_floating_point():
            return x / 255.0
        channels = x.shape[1]
        mean = torch.tensor(self.image_mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.image_std, dtype=x.dtype, device=x.device)
        if mean.numel() == 1 and channels == 3:
            mean = mean.expand(3)
        if std.numel() == 1 and channels == 3:
            std = std.expand(3)
        x = x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
        return x.clamp_(0.0, 1.0)

    def gray(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Luma [B, 1, H, W] in [0, 1], with the normalisation folded into the luma weights (one pass).

        Clamping happens once on the luma rather than per channel; the two differ only for input outside the
        processor's range.
        """
        self.validate(pixel_values)
        x = pixel_values.to(self.compute_dtype)
        channels = x.shape[1]
        if not pixel_values.is_floating_point():
            scale, offset = [1.0 / 255.0] * channels, [0.0] * channels
        else:
            scale = list(self.image_std) * (channels if len(self.image_std) == 1 else 1)
            offset = list(self.image_mean) * (channels if len(self.image_mean) == 1 else 1)
        weights = LUMA_WEIGHTS if channels == 3 else (1.0,)
        gray = x[:, :1] * (weights[0] * scale[0])
        for c in range(1, channels):
            gray.add_(x[:, c : c + 1], alpha=weights[c] * scale[c])
        bias = sum(w * m for w, m in zip(weights, offset))
        return gray.add_(bias).clamp_(0.0, 1.0)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of intensities [B, C, H, W] (C = 1 passes through)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
