"""Reading face images: one function and one list of file types for every command (train, eval, embed, search,
verify, align, the benchmark).

:func:`read_image` returns an 8-bit RGB PIL image whatever the file holds:

* 16-bit images (``I;16`` and its byte orders) are scaled from 0..65535 to 0..255, not clipped to white as
  Pillow's ``convert("RGB")`` does; 32-bit integer images (``I``) are scaled by the range their values
  use (8 or 16 bits, else the bits the largest value needs; negatives become 0); float images (``F``) in
  [0, 1] are scaled by 255, larger ones like integers (NaN becomes 0);
* palette, grey, grey+alpha, RGBA and CMYK images are converted; transparent pixels are composited onto black
  (their stored colour is arbitrary);
* the EXIF orientation tag is applied, so a phone photo is upright as viewers show it;
* the decoded size is capped. An image larger than :func:`downscale_pixels` (default 16 megapixels, far more than
  any face model needs) is reduced on load: JPEGs are decoded at 1/2, 1/4 or 1/8 scale directly (``draft``),
  other formats are decoded and then shrunk by an integer factor (``reduce``). An image whose decoded size would
  still exceed :func:`max_image_pixels` (default 80 megapixels, below Pillow's own decompression-bomb limits) is
  refused before decoding with :class:`ImageTooLargeError`, as is any decompression bomb: a file that declares
  50000x50000 pixels costs nothing.

Both limits are settings: the environment variables ``PETAL_PEFT_MAX_IMAGE_PIXELS`` and
``PETAL_PEFT_DOWNSCALE_PIXELS`` (read at each call, so DataLoader workers see them too), or the arguments of
:func:`read_image`. Every failure is an :class:`ImageReadError` (a ValueError) whose message names the image.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_DOWNSCALE_PIXELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageTooLargeError",
    "downscale_pixels",
    "is_image_file",
    "list_image_files",
    "max_image_pixels",
    "read_image",
    "size_problem",
    "to_rgb8",
]

#: file types every command reads (lower case; matched case-insensitively)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")

#: images decoding to more pixels than this are refused (80 MP: below Pillow's 89 MP warning and 179 MP error)
DEFAULT_MAX_IMAGE_PIXELS = 80_000_000
#: larger images are reduced on load to at most about this many pixels (4096 x 4096)
DEFAULT_DOWNSCALE_PIXELS = 4096 * 4096
MAX_PIXELS_ENV = "PETAL_PEFT_MAX_IMAGE_PIXELS"
DOWNSCALE_PIXELS_ENV = "PETAL_PEFT_DOWNSCALE_PIXELS"


class ImageReadError(ValueError):
    """An image that cannot be read: missing, not an image, corrupt, or too large. The message names it."""


class ImageTooLargeError(ImageReadError):
    """An image whose decoded size exceeds the cap (a decompression bomb, or a photo larger than allowed)."""


def _env_pixels(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        pixels = int(float(value))
    except ValueError:
        raise ValueError(f"{name} must be a number of pixels, got {value!r}.") from None
    if pixels < 1:
        raise ValueError(f"{name} must be a positive number of pixels, got {value!r}.")
    return pixels


def max_image_pixels() -> int:
    """The largest decoded size accepted (``PETAL_PEFT_MAX_IMAGE_PIXELS``, default 80 megapixels)."""
    return _env_pixels(MAX_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS)


def downscale_pixels() -> int:
    """Images above this size are reduced on load (``PETAL_PEFT_DOWNSCALE_PIXELS``, default 16 megapixels)."""
    return _env_pixels(DOWNSCALE_PIXELS_ENV, DEFAULT_DOWNSCALE_PIXELS)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def list_image_files(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Every image file in ``folder`` and below (hidden files skipped), sorted, as paths joined to ``folder``."""
    suffixes = tuple(e.lower() for e in extensions)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(os.path.join(root, f) for f in files if not f.startswith(".") and f.lower().endswith(suffixes))
    return sorted(out)


# ---- pixel depth ----------------------------------------------------------------------------------------------
def _scale_to_uint8(values: np.ndarray, unit_range: bool) -> np.ndarray:
    """Integer or float samples -> uint8 by the range they use: [0, 1] floats (``unit_range``) times 255; else
    values up to 255 as they are, up to 65535 as 16-bit data, larger by the bits the largest value needs.
    Negatives and NaN become 0."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.maximum(values, 0.0)
    top = float(values.max()) if values.size else 0.0
    if unit_range:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    elif top <= 65535.0:
        scale = 255.0 / 65535.0
    else:  # 32-bit data: the bits the largest value needs
        scale = 255.0 / float(2 ** math.ceil(math.log2(top + 1.0)) - 1)
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _deep_to_grey8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image -> 8-bit grey ("L")."""
    if image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    array = np.asarray(image)
    unit = False
    if image.mode == "F":
        finite = array[np.isfinite(array)]
        unit = bool(finite.size) and float(finite.max()) <= 1.0
    return Image.fromarray(_scale_to_uint8(array, unit), mode="L")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB: deep (16/32-bit, float) images scaled, transparency composited onto black."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _deep_to_grey8(image).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# ---- size cap -------------------------------------------------------------------------------------------------
_ORIENTATION_TAG = 0x0112
#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does)
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _jpeg_scale(width: int, height: int, target_pixels: int) -> int:
    """The 1/1, 1/2, 1/4 or 1/8 scale a JPEG decoder applies to land at or above ``target_pixels``."""
    factor = math.sqrt(width * height / target_pixels) if width * height > target_pixels else 1.0
    return max(s for s in (1, 2, 4, 8) if s <= max(1.0, factor))


def size_problem(image: Image.Image, max_pixels: int | None = None, target_pixels: int | None = None) -> str | None:
    """Without decoding: why an opened image is too large to read (None when it is fine)."""
    max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)
    target_pixels = min(downscale_pixels() if target_pixels is None else int(target_pixels), max_pixels)
    width, height = image.size
    scale = _jpeg_scale(width, height, target_pixels) if image.format == "JPEG" else 1
    if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
        return None
    return (
        f"image too large: it declares {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
        f"{max_pixels / 1e6:.0f} megapixel limit (a decompression bomb, or a photo to shrink first; the limit is "
        f"{MAX_PIXELS_ENV})"
    )


def _decode_capped(image: Image.Image, label: str, max_pixels: int, target_pixels: int) -> Image.Image:
    """Shrink on load where the format allows, check the decoded size, decode, convert, orient."""
    problem = size_problem(image, max_pixels, target_pixels)
    if problem:
        raise ImageTooLargeError(f"{label}: {problem}.")
    width, height = image.size
    scale = _jpeg_scale(width, height, target_pixels) if image.format == "JPEG" else 1
    if scale > 1:
        image.draft(image.mode, (math.ceil(width / scale), math.ceil(height / scale)))
    decoded_w, decoded_h = image.size
    image.load()
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    rgb = to_rgb8(image)
    if decoded_w * decoded_h > target_pixels:
        rgb = rgb.reduce(math.ceil(math.sqrt(decoded_w * decoded_h / target_pixels)))
    method = _ORIENTATION_FIX.get(orientation)
    return rgb.transpose(method) if method is not None else rgb.copy()


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    target_pixels: int | None = None,
) -> Image.Image:
    """Decode an image file (or encoded bytes) into an upright 8-bit RGB PIL image.

    Args:
        source: a path, or the encoded bytes of an image.
        name: how messages name the image (default: the path, or ``<bytes>``).
        max_pixels: refuse images whose decoded size exceeds this (default :func:`max_image_pixels`).
        target_pixels: reduce larger images on load to at most about this size (default :func:`downscale_pixels`).

    Returns:
        The decoded RGB image (its EXIF orientation applied).

    Raises:
        ImageTooLargeError: the image (or a decompression bomb) exceeds ``max_pixels``.
        ImageReadError: the file is missing, not an image, or corrupt.
    """
    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)
    target_pixels = downscale_pixels() if target_pixels is None else int(target_pixels)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap applies instead
            opened = Image.open(fp)
        with opened as image:
            return _decode_capped(image, label, max_pixels, min(target_pixels, max_pixels))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{label}: image too large, a decompression bomb ({err}).") from None
    except FileNotFoundError:
        if not isinstance(source, bytes) and os.path.islink(source):
            raise ImageReadError(f"{label}: broken symbolic link (its target does not exist).") from None
        raise ImageReadError(f"{label}: image file not found.") from None
    except IsADirectoryError:
        raise ImageReadError(f"{label}: is a folder, not an image file.") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not a readable image (unknown or corrupt format).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f"{label}: unreadable or truncated image ({err}).") from None
