"""How much fine detail survives in an image: an effective resolution in pixels, with no learned weights.

An image captured at ``n`` pixels and upscaled to the model's input keeps no energy above ``n / 2`` cycles per
image. The ratio of Laplacian energy to gradient energy is the mean squared frequency of the gradient's spectrum,
``E|lap x|^2 / E|grad x|^2 = (2 pi)^2 E[f^2]``, so it measures where the detail stops, and being a ratio of two
energies of the same image it does not depend on contrast or brightness. For a gradient spectrum flat up to a
cut-off ``f_c`` (cycles/pixel) ``E[f^2] = f_c^2 / 2``; the score reports ``2 f_c`` times the image side, i.e. the
pixel count that such an image would need. Natural images carry less energy near their cut-off than a flat
spectrum, so the figure runs below the true capture size (about 0.4x on our benchmark) but rises monotonically
with it. Higher is better. Noise added after upscaling would read as detail; noise at capture size does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..registry import QUALITY_ESTIMATORS
from .pixels import PixelDecoder


@QUALITY_ESTIMATORS.register("resolution")
class ResolutionEstimator(torch.nn.Module):
    """Effective resolution score [B] (float32, in pixels, higher = more detail) of pixel_values [B, C, H, W].

    Args:
        image_mean: the image processor's normalisation mean of float input (None: 0.5, i.e. [-1, 1]).
        image_std: the image processor's normalisation std of float input (None: 0.5).
        eps: gradient energy (intensity^2 per pixel) below which an image counts as flat (score 0).
    """

    higher_is_better = True

    def __init__(
        self,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.decoder = PixelDecoder(image_mean, image_std, min_size=4)
        self.eps = float(eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        gray = self.decoder.gray(pixel_values)[:, 0]
        # both energies over the same interior, so that no border padding enters either; shifted slices are much
        # faster on CPU than a 1-channel conv2d
        inner = gray[:, 1:-1, 1:-1]
        laplacian = gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1]
        laplacian.add_(gray[:, 1:-1, :-2]).add_(gray[:, 1:-1, 2:]).sub_(inner, alpha=4.0)
        laplacian_energy = laplacian.square().mean(dim=(1, 2))
        dx = inner[:, :, 1:] - inner[:, :, :-1]
        dy = inner[:, 1:, :] - inner[:, :-1, :]
        gradient_energy = dx.square().mean(dim=(1, 2)) + dy.square().mean(dim=(1, 2))
        ratio = laplacian_energy / (gradient_energy + self.eps)
        side = math.sqrt(gray.shape[-2] * gray.shape[-1])
        return (side * torch.sqrt(ratio / 2) / math.pi).to(torch.float32)
