"""Image -> tensor transform and the synthetic low-resolution degradation.

Randomness comes from explicit ``torch.Generator`` objects seeded per sample from ``(seed, index, epoch)``,
never from global or per-worker state, so a sample looks the same whatever the number of DataLoader workers
or the order in which they ask for it. Only PIL, numpy and torch are needed (no torchvision).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from petal_peft.images import to_rgb8

__all__ = [
    "DegradationResult",
    "FaceTransform",
    "LowResolutionDegradation",
    "sample_generator",
    "sample_seed",
]

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
# Stream ids keep the flip and the degradation of one sample independent of each other.
STREAM_DEGRADATION = 0
STREAM_FLIP = 1


def sample_seed(seed: int, index: int, epoch: int = 0, stream: int = 0) -> int:
    """A well-mixed 64-bit seed for one sample of one epoch (numpy's SeedSequence hashing)."""
    for name, value in (("seed", seed), ("index", index), ("epoch", epoch), ("stream", stream)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    state = np.random.SeedSequence([int(seed), int(index), int(epoch), int(stream)]).generate_state(1, np.uint64)
    return int(state[0])


def sample_generator(seed: int, index: int, epoch: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`sample_seed`."""
    return torch.Generator().manual_seed(sample_seed(seed, index, epoch, stream))


def _to_rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb8(image)  # 16-bit and float images scaled, not clipped
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
        return Image.fromarray(image).convert("RGB")
    raise TypeError(
        f"expected a PIL image or a uint8 numpy array [H, W(, C)], got {type(image).__name__}"
        + (f" of dtype {image.dtype}" if isinstance(image, np.ndarray) else "")
        + "."
    )


def _uniform(u: float, low: float, high: float) -> float:
    return low + (high - low) * u


class FaceTransform:
    """PIL image -> float tensor [3, S, S]: RGB, resize to ``image_size``, [0, 1], then ``(x - mean) / std``.

    ``horizontal_flip=True`` mirrors the image with probability ``flip_p``, drawn from the ``generator``
    passed to ``__call__`` (the global torch RNG if none). Defaults (mean = std = 0.5, i.e. [-1, 1]) follow
    insightface-style face models; use :meth:`from_image_processor` to match a transformers checkpoint.
    """

    def __init__(
        self,
        image_size: int = 112,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        horizontal_flip: bool = False,
        flip_p: float = 0.5,
        interpolation: str = "bicubic",
    ) -> None:
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}.")
        if any(not math.isfinite(v) or v <= 0 for v in std):
            raise ValueError(f"std values must be positive and finite, got {std}.")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p!r}.")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}.")
        self.image_size = int(image_size)
        self.mean, self.std = mean, std
        self.horizontal_flip = bool(horizontal_flip)
        self.flip_p = float(flip_p)
        self.interpolation = interpolation
        self._mean_t = torch.tensor(mean).view(3, 1, 1)
        self._std_t = torch.tensor(std).view(3, 1, 1)

    @classmethod
    def from_image_processor(cls, processor: Any, **kwargs: Any) -> FaceTransform:
        """Take size, mean and std from a transformers image processor (e.g. ``ViTImageProcessor``)."""
        size = getattr(processor, "size", None)
        if isinstance(size, int | float) or size is None:
            side = size
        else:  # a dict, or transformers 5's SizeDict
            get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
            side = get("height") or get("shortest_edge") or get("width")
        kwargs.setdefault("image_size", int(side) if side else 112)
        if getattr(processor, "image_mean", None) is not None:
            kwargs.setdefault("mean", list(processor.image_mean))
        if getattr(processor, "image_std", None) is not None:
            kwargs.setdefault("std", list(processor.image_std))
        return cls(**kwargs)

    def __call__(self, image: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        img = _to_rgb(image)
        if img.size != (self.image_size, self.image_size):
            img = img.resize((self.image_size, self.image_size), _INTERPOLATIONS[self.interpolation])
        if self.horizontal_flip and float(torch.rand((), generator=generator)) < self.flip_p:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
        return (x - self._mean_t) / self._std_t

    def __repr__(self) -> str:
        return (
            f"FaceTransform(image_size={self.image_size}, mean={self.mean}, std={self.std}, "
            f"horizontal_flip={self.horizontal_flip}, flip_p={self.flip_p}, "
            f"interpolation={self.interpolation!r})"
        )


@dataclass
class DegradationResult:
    """A degraded image (same size as the input), its heuristic quality in (0, 1] and the drawn parameters."""

    image: Image.Image
    quality_level: float
    params: dict[str, Any] = field(default_factory=dict)


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.")
    return float(p)


def _check_range(name: str, rng: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(rng) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {rng!r}.")
    a, b = float(rng[0]), float(rng[1])
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {rng!r}.")
    return a, b


class LowResolutionDegradation:
    """Make a probe-like (surveillance-style) image from a sharp one; the output has the input's size.

    Per image, in this order, each step with its own probability: Gaussian blur (sigma in ``blur_sigma``),
    downsample so the short side is ``min_size..max_size`` px (random interpolation), Gaussian noise (std in
    ``noise_std``, 0-255 scale), JPEG re-encode (quality in ``jpeg_quality``), then upsample back to the input
    size. Noise and JPEG act at the low resolution, as they would in a small capture. ``p`` is the chance that
    an image is degraded at all (``p=0.5`` mixes sharp and degraded images).

    Reproducible: :meth:`degrade` with ``index``/``epoch`` seeds a private generator from
    ``(seed, index, epoch)``; with ``generator`` it uses that. Every random number is drawn whether or not its
    step runs, so changing one probability does not reshuffle the other steps' parameters.

    ``quality_level`` is a heuristic strength, monotone in each step, 1 for an untouched image: the product
    of ``k / short_side`` (downsample), ``1 / (1 + sigma / 2)`` (blur), ``1 / (1 + noise_std / 10)`` and
    ``min(1, 0.5 + jpeg_quality / 200)``. Meant as a training target or gate signal, not a calibrated IQA.
    """

    _N_UNIFORMS = 10

    def __init__(
        self,
        min_size: int = 8,
        max_size: int = 48,
        p_downsample: float = 1.0,
        blur_sigma: Sequence[float] = (0.5, 2.0),
        p_blur: float = 0.5,
        noise_std: Sequence[float] = (2.0, 12.0),
        p_noise: float = 0.5,
        jpeg_quality: Sequence[int] = (20, 80),
        p_jpeg: float = 0.5,
        p: float = 1.0,
        seed: int = 0,
    ) -> None:
        if int(min_size) != min_size or int(max_size) != max_size or not 1 <= min_size <= max_size:
            raise ValueError(f"need integers 1 <= min_size <= max_size, got {min_size!r}, {max_size!r}.")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.p_downsample = _check_prob("p_downsample", p_downsample)
        self.blur_sigma = _check_range("blur_sigma", blur_sigma, 0.0, 50.0)
        self.p_blur = _check_prob("p_blur", p_blur)
        self.noise_std = _check_range("noise_std", noise_std, 0.0, 255.0)
        self.p_noise = _check_prob("p_noise", p_noise)
        self.jpeg_quality = _check_range("jpeg_quality", jpeg_quality, 1, 100)
        self.p_jpeg = _check_prob("p_jpeg", p_jpeg)
        self.p = _check_prob("p", p)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"LowResolutionDegradation(min_size={self.min_size}, max_size={self.max_size}, "
            f"p_downsample={self.p_downsample}, blur_sigma={self.blur_sigma}, p_blur={self.p_blur}, "
            f"noise_std={self.noise_std}, p_noise={self.p_noise}, jpeg_quality={self.jpeg_quality}, "
            f"p_jpeg={self.p_jpeg}, p={self.p}, seed={self.seed})"
        )

    def __call__(self, image: Any, generator: torch.Generator | None = None) -> Image.Image:
        return self.degrade(image, generator=generator).image

    def degrade(
        self,
        image: Any,
        *,
        index: int | None = None,
        epoch: int = 0,
        generator: torch.Generator | None = None,
    ) -> DegradationResult:
        """Degrade one image. Give ``index`` (and ``epoch``) for per-sample seeding, or a ``generator``;
        with neither, the global torch RNG picks the seed."""
        if generator is None:
            if index is not None:
                generator = sample_generator(self.seed, index, epoch, STREAM_DEGRADATION)
            else:
                generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        img = _to_rgb(image)
        width, height = img.size
        u = torch.rand(self._N_UNIFORMS, generator=generator, dtype=torch.float64).tolist()
        params: dict[str, Any] = {}
        if u[0] >= self.p:
            return DegradationResult(img, 1.0, params)
        quality = 1.0

        if u[1] < self.p_blur:
            sigma = _uniform(u[2], *self.blur_sigma)
            if sigma > 0:
                img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
            params["blur_sigma"] = sigma
            quality *= 1.0 / (1.0 + sigma / 2.0)

        short = min(width, height)
        k = self.min_size + min(int(u[4] * (self.max_size - self.min_size + 1)), self.max_size - self.min_size)
        downsampled = u[3] < self.p_downsample and k < short
        if downsampled:
            interp = ("bilinear", "bicubic", "box")[min(int(u[9] * 3), 2)]
            small = (max(1, round(width * k / short)), max(1, round(height * k / short)))
            img = img.resize(small, _INTERPOLATIONS[interp])
            params.update(size=k, interpolation=interp)
            quality *= k / short

        if u[5] < self.p_noise:
            std = _uniform(u[6], *self.noise_std)
            arr = np.asarray(img, dtype=np.float32)
            noise = torch.randn(arr.shape, generator=generator, dtype=torch.float32).numpy() * std
            img = Image.fromarray(np.clip(np.rint(arr + noise), 0, 255).astype(np.uint8), "RGB")
            params["noise_std"] = std
            quality *= 1.0 / (1.0 + std / 10.0)

        if u[7] < self.p_jpeg:
            q = int(round(_uniform(u[8], *self.jpeg_quality)))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q)
            buf.seek(0)
            with Image.open(buf) as decoded:
                img = decoded.convert("RGB")
            params["jpeg_quality"] = q
            quality *= min(1.0, 0.5 + q / 200.0)

        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BICUBIC)
        return DegradationResult(img, float(min(1.0, max(quality, 1e-4))), params)
