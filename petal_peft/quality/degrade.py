"""Synthetic degradations of known severity, to test estimators and to calibrate a gate from one image set.

Low-resolution face probes are captured small and upscaled to the model's input size; sensor noise, blur and
compression happen at the capture resolution. So :func:`degrade` resizes down to ``level`` pixels, applies the
variant there, and resizes back up: the known level is the resolution that survives.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

VARIANTS = ("clean", "blur", "noise", "jpeg")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a float tensor [B, C, H, W] in [0, 1] with C = 1 or 3, got {shape}.")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be floating point in [0, 1], got {images.dtype}; divide uint8 by 255.")


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic resize with antialiasing when shrinking, clamped to [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    out = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return out.clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders."""
    if sigma <= 0:
        return images
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)


def add_noise(images: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive white Gaussian noise of standard deviation ``std`` (intensity units), clamped to [0, 1]."""
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + std * noise).clamp(0.0, 1.0)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip through Pillow at ``quality`` (1..95), per image."""
    from PIL import Image

    out = []
    for image in images:
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        mode = "L" if array.shape[2] == 1 else "RGB"
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))
    return (torch.stack(out).to(images.dtype) / 255.0).to(images.device)


def degrade(
    images: torch.Tensor,
    level: int,
    variant: str = "clean",
    *,
    blur_sigma: float = 0.8,
    noise_std: float = 0.03,
    jpeg_quality: int = 40,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Down to ``level`` x ``level`` pixels, apply ``variant`` there, and back up to the input size."""
    _check_images(images)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    size = tuple(images.shape[-2:])
    small = resize(images, level) if level < max(size) else images
    if variant == "blur":
        small = gaussian_blur(small, blur_sigma)
    elif variant == "noise":
        small = add_noise(small, noise_std, generator)
    elif variant == "jpeg":
        small = jpeg(small, jpeg_quality)
    return resize(small, size) if small.shape[-2:] != size else small
