"""BRISQUE (Mittal, Moorthy & Bovik, 2012), batched in torch.

The reference implementations score one image at a time in numpy/scipy (and pyiqa/piq download their regressor at
run time). Here the whole batch goes through a few convolutions and reductions: MSCN coefficients and their four
pairwise products at two scales, an asymmetric generalised Gaussian fitted to each by moment matching (the shape
solved from a precomputed monotone table instead of a root finder), then the LIVE RBF-SVR, all as tensor ops.
Every detail follows the PyPI ``brisque`` 0.2.0 package so scores agree with it (zero-padded 7x7 Gaussian window
with sigma 7/6, C = 1/255 on [0, 1] luma, AGGD for all five maps, OpenCV's bicubic half-size resize).
Lower scores mean better quality (roughly 0..100 on natural images).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..registry import QUALITY_ESTIMATORS
from .brisque_model import MODEL_FILE, load_svr
from .pixels import PixelDecoder

_PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()  # the normalised 2-D window is the outer product of this with itself


def _aggd_shape_table(points: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho(alpha), alpha) on a log grid, with rho(a) = G(2/a)^2 / (G(1/a) G(3/a)) increasing in a."""
    alpha = torch.logspace(math.log10(0.05), math.log10(20.0), points, dtype=torch.float64)
    log_rho = 2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)
    return log_rho.exp(), alpha


def _cubic_half_weights() -> torch.Tensor:
    """OpenCV's INTER_CUBIC (a = -0.75) weights for an output pixel halfway between two input pixels."""
    a, t = -0.75, 0.5

    def near(x: float) -> float:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return torch.tensor([far(1 + t), near(t), near(1 - t), far(2 - t)], dtype=torch.float64)


def _round_half_even(value: float) -> int:
    return int(round(value))  # Python's round is half-to-even, like OpenCV's cvRound


def _pad_spec(dim: int, before: int, after: int, ndim: int) -> list[int]:
    """F.pad's argument (last two dimensions, as replicate padding of 4-D input needs) padding only ``dim``."""
    dim = dim % ndim
    if dim not in (ndim - 1, ndim - 2):
        raise ValueError("only the two spatial (last) dimensions can be filtered")
    return [before, after, 0, 0] if dim == ndim - 1 else [0, 0, before, after]


def _filter_axis(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """'same' correlation with a short symmetric kernel along ``dim``, zero padded (scipy's convolve2d 'same').

    Shifted slices with in-place adds: on CPU this is an order of magnitude faster than a 1-channel conv2d.
    """
    radius = len(taps) // 2
    size = x.shape[dim]
    padded = F.pad(x, _pad_spec(dim, radius, radius, x.dim()))
    out = padded.narrow(dim, 0, size) * taps[0]
    for offset in range(1, len(taps)):
        out.add_(padded.narrow(dim, offset, size), alpha=taps[offset])
    return out


class BrisqueFeatures(torch.nn.Module):
    """The 36 BRISQUE features [B, 36] of luma images [B, 1, H, W] in [0, 1]."""

    C = 1.0 / 255.0

    def __init__(self) -> None:
        super().__init__()
        window = _gaussian_window()
        self.register_buffer("window", window, persistent=False)
        rho, alpha = _aggd_shape_table()
        self.register_buffer("rho_table", rho, persistent=False)
        self.register_buffer("alpha_table", alpha, persistent=False)
        self.register_buffer("half_weights", _cubic_half_weights(), persistent=False)

    # ----------------------------------------------------------------------------------------------- pieces
    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.window.tolist()
        return _filter_axis(_filter_axis(x, taps, dim=-1), taps, dim=-2)

    def mscn(self, gray: torch.Tensor) -> torch.Tensor:
        """Mean-subtracted contrast-normalised coefficients, zero padding at the borders like scipy's 'same'."""
        both = self._blur(torch.cat([gray, gray * gray], dim=0))
        mu, mean_sq = both.split(gray.shape[0], dim=0)
        sigma = (mu * mu - mean_sq).abs().sqrt()
        return (gray - mu) / (sigma + self.C)

    def _downscale_axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        size = x.shape[dim]
        out = max(_round_half_even(size / 2), 1)
        # output pixel d reads input pixels 2d-1 .. 2d+2; borders replicate (OpenCV clamps the indices)
        right = max(2 * out + 2 - size, 0)
        padded = F.pad(x, _pad_spec(dim, 1, right, x.dim()), mode="replicate")
        taps = self.half_weights.tolist()
        result = None
        for offset, tap in enumerate(taps):
            strided = padded.narrow(dim, offset, 2 * out - 1).unfold(dim, 1, 2).squeeze(-1)
            result = strided * tap if result is None else result.add_(strided, alpha=tap)
        return result

    def downscale(self, gray: torch.Tensor) -> torch.Tensor:
        """Half-size bicubic resize, as ``cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=INTER_CUBIC)``."""
        return self._downscale_axis(self._downscale_axis(gray, 3), 2)

    def _solve_shape(self, rho: torch.Tensor) -> torch.Tensor:
        table = self.rho_table.to(rho.dtype)
        alphas = self.alpha_table.to(rho.dtype)
        rho = rho.clamp(table[0], table[-1])
        upper = torch.searchsorted(table, rho.contiguous()).clamp(1, table.numel() - 1)
        lo_r, hi_r = table[upper - 1], table[upper]
        frac = (rho - lo_r) / (hi_r - lo_r)
        return alphas[upper - 1] + frac * (alphas[upper] - alphas[upper - 1])

    def aggd_fit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shape, mean, left and right variance of an asymmetric generalised Gaussian per row of x [B, N]."""
        count = x.shape[1]
        total_sq = x.square().sum(dim=1)
        left_sq = x.clamp(max=0).square().sum(dim=1)
        n_neg = (x < 0).sum(dim=1).to(x.dtype)
        left = left_sq / n_neg.clamp_min(1)
        right = (total_sq - left_sq).clamp_min(0) / (count - n_neg).clamp_min(1)
        tiny = torch.finfo(x.dtype).tiny
        gamma = left.sqrt() / right.sqrt().clamp_min(tiny)
        r_hat = (x.abs().sum(dim=1) / count).square() / (total_sq / count).clamp_min(tiny)
        big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1).square()
        alpha = self._solve_shape(big_r)
        ratio = torch.exp(torch.lgamma(2 / alpha) - 0.5 * (torch.lgamma(1 / alpha) + torch.lgamma(3 / alpha)))
        mean = (right.sqrt() - left.sqrt()) * ratio
        return alpha, mean, left, right

    def single_scale(self, gray: torch.Tensor) -> torch.Tensor:
        m = self.mscn(gray)[:, 0]
        maps = [
            m,
            m[:, :, :-1] * m[:, :, 1:],
            m[:, :-1, :] * m[:, 1:, :],
            m[:, :-1, :-1] * m[:, 1:, 1:],
            m[:, 1:, :-1] * m[:, :-1, 1:],
        ]
        features = []
        for index, coefficients in enumerate(maps):
            alpha, mean, left, right = self.aggd_fit(coefficients.flatten(1))
            if index == 0:
                features += [alpha, (left + right) / 2]
            else:
                features += [alpha, mean, left, right]
        return torch.stack(features, dim=1)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.single_scale(gray), self.single_scale(self.downscale(gray))], dim=1)


class RbfSvr(torch.nn.Module):
    """Batched epsilon-SVR prediction: sum_i c_i exp(-gamma |s_i - x|^2) - rho over [-1, 1]-scaled features."""

    def __init__(self, model_path: str | os.PathLike = MODEL_FILE) -> None:
        super().__init__()
        model = load_svr(model_path)
        self.register_buffer("support_vectors", model.support_vectors, persistent=False)
        self.register_buffer("coefficients", model.coefficients, persistent=False)
        self.register_buffer("feature_min", model.feature_min, persistent=False)
        self.register_buffer("feature_max", model.feature_max, persistent=False)
        self.rho = model.rho
        self.gamma = model.gamma

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(torch.float64)  # [B, 36]; 770 support vectors, so float64 costs nothing here
        x = -1 + 2 * (x - self.feature_min) / (self.feature_max - self.feature_min)
        distances = torch.cdist(x, self.support_vectors).square()
        return torch.exp(-self.gamma * distances) @ self.coefficients - self.rho


@QUALITY_ESTIMATORS.register("brisque")
class BrisqueEstimator(torch.nn.Module):
    """BRISQUE score [B] (float32, lower = better) of pixel_values [B, C, H, W].

    Args:
        image_mean: the image processor's normalisation mean of float input (None: 0.5, i.e. [-1, 1]).
        image_std: the image processor's normalisation std of float input (None: 0.5).
        precision: "float32" (default, fast) or "float64" (closest to the numpy reference) for the features.
        model_path: a safetensors SVR written by ``brisque_model.convert`` (default: the shipped LIVE model).
    """

    higher_is_better = False

    def __init__(
        self,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        precision: str = "float32",
        model_path: str | None = None,
    ) -> None:
        super().__init__()
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}.")
        self.decoder = PixelDecoder(image_mean, image_std, min_size=8, compute_dtype=_PRECISIONS[precision])
        self.features = BrisqueFeatures()
        self.regressor = RbfSvr(model_path if model_path is not None else MODEL_FILE)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        gray = self.decoder.gray(pixel_values)
        scores = self.regressor(self.features(gray))
        return scores.to(torch.float32)
