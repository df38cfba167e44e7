"""Face alignment maths: landmark templates, least-squares similarity transforms, and batched warps (no dlib).

Two output geometries are supported, both defined by where dlib's 5 landmarks (the outer and inner corner of each
eye and the base of the nose, as ``shape_predictor_5_face_landmarks.dat`` returns them) should land:

- ``"arcface"``: the ArcFace / insightface 112x112 crop, the standard input of face-recognition transformers.
  insightface defines it by 5 other points (eye centres, nose tip, mouth corners). Their positions in dlib's own
  mean face (the 68-point mean shape dlib ships in ``get_face_chip_details``) give, by a least-squares similarity,
  where dlib's 5 points fall in the ArcFace crop (:data:`DLIB5_IN_ARCFACE_112`; fit residual <= 1.7 px). On
  ArcFace-aligned Glint360K photos dlib's predictor finds its 5 points within 1.5 px of these positions on average.
- ``"dlib"``: dlib's face chip (``get_face_chip_details(shape, size, padding)``): the 5-point mean face in a unit
  square, grown by ``padding`` on each side. dlib's face descriptor expects size 150, padding 0.25.

Matrices are 2x3 affine maps from OUTPUT pixel coordinates to INPUT pixel coordinates (pixel centres at integers),
which is what sampling needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB5_IN_ARCFACE_112",
    "DLIB5_MEAN_FACE",
    "TEMPLATES",
    "apply_affine",
    "compose_affine",
    "invert_affine",
    "landmark_template",
    "similarity_transform",
    "template_to_template",
    "warp_affine",
]

#: insightface's ArcFace template for 112x112 crops: left eye, right eye, nose tip, left and right mouth corner
#: (left = image left).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)

#: dlib's 5-point mean face in its unit square (dlib's get_face_chip_details): outer / inner corner of the
#: image-right eye, outer / inner corner of the image-left eye, base of the nose.
DLIB5_MEAN_FACE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# dlib's 68-point mean face (same unit square), the points that correspond to the ArcFace template: the six
# points around each eye (36-41, 42-47), the nose tip (30) and the mouth corners (48, 54).
_DLIB68_EYE_LEFT = np.array(
    [[0.121737, 0.216423], [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
     [0.182743, 0.244077]]
)  # fmt: skip
_DLIB68_EYE_RIGHT = np.array(
    [[0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758], [0.858516, 0.216423], [0.79751, 0.244077],
     [0.719335, 0.245099]]
)  # fmt: skip
_DLIB68_NOSE_TIP = np.array([0.490127, 0.515625])
_DLIB68_MOUTH = np.array([[0.290379, 0.784792], [0.689874, 0.784792]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (scale, rotation, translation; no reflection) that best maps ``src`` points onto ``dst``
    in the least-squares sense (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two [N>=2, 2] point sets of the same shape, got {src.shape} and {dst.shape}.")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values.")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("the source landmarks coincide; no transform is defined.")
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(sigma) @ sign) / var_s)
    return np.concatenate([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(matrix[:, :2])
    return np.concatenate([a, -a @ matrix[:, 2:]], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` (apply ``inner`` first)."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], axis=1)


def _dlib5_in_arcface_112() -> np.ndarray:
    mean_face = np.stack(
        [_DLIB68_EYE_LEFT.mean(0), _DLIB68_EYE_RIGHT.mean(0), _DLIB68_NOSE_TIP, _DLIB68_MOUTH[0], _DLIB68_MOUTH[1]]
    )
    return apply_affine(similarity_transform(mean_face, ARCFACE_TEMPLATE_112), DLIB5_MEAN_FACE)


#: where dlib's 5 landmarks fall in the ArcFace 112x112 crop
DLIB5_IN_ARCFACE_112 = _dlib5_in_arcface_112()

TEMPLATES = ("arcface", "dlib")


def landmark_template(template: str = "arcface", size: int = 112, margin: int = 0, padding: float = 0.25) -> np.ndarray:
    """Target positions [5, 2] (output pixels) of dlib's 5 landmarks for an output image of ``size + 2 * margin``.

    ``"arcface"``: the ArcFace 112 crop scaled to ``size``; ``"dlib"``: dlib's chip of ``size`` with ``padding``
    (dlib's default for its descriptor: 150, 0.25). ``margin`` adds that many pixels of context on every side.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}.")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}.")
    if template == "arcface":
        points = DLIB5_IN_ARCFACE_112 * (size / 112.0)
    elif template == "dlib":
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}.")
        points = (DLIB5_MEAN_FACE + padding) / (1 + 2 * padding) * size
    else:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}.")
    return points + margin


def template_to_template(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The fixed map from ``target``-frame pixels to ``source``-frame pixels (e.g. dlib chip -> ArcFace canvas):
    sampling a ``source``-aligned image with it gives the ``target``-aligned image."""
    return similarity_transform(target, source)


def warp_affine(
    images: torch.Tensor,
    matrices: torch.Tensor | np.ndarray | Sequence[np.ndarray],
    size: int | tuple[int, int],
    mode: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Sample ``images`` [B, C, H, W] (float) at ``matrices`` [B, 2, 3] (output pixel -> input pixel) into
    [B, C, h, w]; outside the input is 0.

    With ``antialias``, an image shrunk by more than 1.5x is first reduced by box filtering (the integer factor
    of the shrink), so that bilinear sampling does not alias.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [batch, channels, height, width], got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}.")
    m = torch.as_tensor(np.asarray(matrices) if not isinstance(matrices, torch.Tensor) else matrices)
    m = m.to(torch.float64).reshape(-1, 2, 3)
    if m.shape[0] != images.shape[0]:
        raise ValueError(f"{m.shape[0]} matrices for {images.shape[0]} images.")
    h, w = (size, size) if isinstance(size, int) else size
    if antialias:
        shrink = torch.sqrt(torch.abs(torch.linalg.det(m[:, :, :2]))).min().item()
        factor = int(math.floor(shrink)) if shrink > 1.5 else 1
        if factor > 1 and min(images.shape[-2:]) >= 2 * factor:
            images = F.avg_pool2d(images, factor, factor, ceil_mode=True, count_include_pad=False)
            # input pixel centre x maps to (x - (factor - 1) / 2) / factor in the reduced image
            scale = torch.tensor([[1.0 / factor], [1.0 / factor]], dtype=torch.float64)
            m = torch.cat([m[:, :, :2] * scale, (m[:, :, 2:] - (factor - 1) / 2) * scale], dim=2)
    in_h, in_w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)  # [1, h*w, 3]
    src = grid @ m.transpose(1, 2)  # [B, h*w, 2] input pixel coordinates
    norm = torch.tensor([2.0 / max(in_w - 1, 1), 2.0 / max(in_h - 1, 1)], dtype=torch.float64)
    src = (src * norm - 1.0).reshape(-1, h, w, 2).to(images.dtype)
    return F.grid_sample(images, src, mode=mode, padding_mode="zeros", align_corners=True)
