"""Small image datasets for evaluation: files, encoded bytes, and 5-point aligned crops.

Evaluation needs only "image -> normalised tensor at the model's size", so this stays independent of the
training data pipeline. Images are read with PIL, converted to RGB, resized (bilinear), scaled to [0, 1] and
normalised with the processor's mean / std.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from petal_peft.images import IMAGE_EXTENSIONS, list_image_files, read_image, to_rgb8

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "IMAGE_EXTENSIONS",
    "AlignedImageDataset",
    "EncodedImageDataset",
    "ImagePathDataset",
    "ImageTransform",
    "SubsetDataset",
    "align_face",
    "list_images",
    "similarity_transform",
]

#: The ArcFace 112x112 five-point template (eyes, nose, mouth corners) used to align IJB loose crops.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def _three(name: str, values: float | Sequence[float]) -> tuple[float, float, float]:
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"`{name}` must have 1 or 3 values, got {len(vals)}.")
    return vals[0], vals[1], vals[2]


@dataclass
class ImageTransform:
    """PIL image -> float tensor [3, H, W], resized and normalised like the model's image processor."""

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image size must be a positive int or (height, width), got {self.size!r}.")
        self.size = size  # type: ignore[assignment]
        self.mean = _three("image_mean", self.mean)
        self.std = _three("image_std", self.std)
        if min(self.std) <= 0:
            raise ValueError(f"image_std must be > 0, got {self.std}.")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb8(image)
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (arr - mean) / std


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files (:data:`~petal_peft.images.IMAGE_EXTENSIONS`) in ``folder`` and below, sorted."""
    return list_image_files(folder)


def _open(source: str | bytes, what: str) -> Image.Image:
    """:func:`petal_peft.images.read_image`: 8-bit RGB, upright, size-capped; ImageReadError names ``what``."""
    return read_image(source, name=what)


class ImagePathDataset(Dataset):
    """Images from file paths."""

    def __init__(self, paths: Sequence[str], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(_open(self.paths[index], self.paths[index]))


class EncodedImageDataset(Dataset):
    """Images from encoded bytes (JPEG/PNG), as stored in insightface ``.bin`` files."""

    def __init__(self, blobs: Sequence[bytes], transform: ImageTransform) -> None:
        self.blobs = list(blobs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(_open(self.blobs[index], f"#{index} of the .bin file"))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping ``src`` onto ``dst`` (Umeyama).

    Returns the 2x3 matrix M with ``dst ~ M @ [x, y, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def align_face(image: Image.Image, landmarks: np.ndarray, output_size: int = 112) -> Image.Image:
    """Warp a loose crop so its five landmarks land on the ArcFace template (insightface ``norm_crop``)."""
    lmk = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dst = ARCFACE_TEMPLATE_112 * (output_size / 112.0)
    m = np.vstack([similarity_transform(lmk, dst), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)  # PIL maps output pixels back to input pixels
    return to_rgb8(image).transform(
        (output_size, output_size), Image.AFFINE, data=tuple(inv[:2].reshape(-1)), resample=Image.BILINEAR
    )


class AlignedImageDataset(Dataset):
    """Loose crops aligned with five landmarks each (IJB-B/C), then transformed."""

    def __init__(self, paths: Sequence[str], landmarks: np.ndarray, transform: ImageTransform) -> None:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (len(paths), 10) and landmarks.shape != (len(paths), 5, 2):
            raise ValueError(f"expected 5 landmarks per image for {len(paths)} images, got {landmarks.shape}.")
        self.paths = list(paths)
        self.landmarks = landmarks.reshape(len(paths), 5, 2)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = _open(self.paths[index], self.paths[index])
        return self.transform(align_face(image, self.landmarks[index]))


class SubsetDataset(Dataset):
    """A view on some indices of another dataset (keeps a single decode path)."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[self.indices[index]]
