"""Detect -> 5 landmarks -> similarity warp to a template: one aligned face per image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from petal_peft.align.geometry import landmark_template, similarity_transform, warp_affine
from petal_peft.align.landmarks import FaceLandmarker, Landmarks, as_rgb_uint8

__all__ = ["AlignedFace", "FaceAligner", "FALLBACKS", "image_aligner", "warp_to_template"]

#: what to do with an image where no face is found: predict the landmarks inside the whole image taken as the
#: face box ("whole-image", the default; the image is kept and reported), resize the whole image ("resize"), or
#: leave it out ("skip"; still reported).
FALLBACKS = ("whole-image", "resize", "skip")


@dataclass(frozen=True)
class AlignedFace:
    """The aligned RGB uint8 image [S, S, 3] (None when skipped), its landmarks, and how it was aligned."""

    image: np.ndarray | None
    landmarks: Landmarks
    matrix: np.ndarray | None  # output pixel -> input pixel, None when resized / skipped
    method: str  # "detected", "whole-image", "resize" or "skip"


def warp_to_template(image: np.ndarray, points: np.ndarray, template: np.ndarray, out_size: int) -> tuple:
    """Warp an RGB uint8 image so that ``points`` land on ``template``; returns (image, output->input matrix)."""
    matrix = similarity_transform(template, points)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = warp_affine(x, matrix[None], out_size)[0]
    return out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy(), matrix


class FaceAligner:
    """``aligner(image) -> AlignedFace``: the main face warped to ``template`` at ``size`` (+ ``margin`` px per side).

    ``template="arcface"`` (default) gives insightface's 112x112 ArcFace crop geometry (scaled to ``size``);
    ``"dlib"`` gives dlib's face chip with ``padding``. See :mod:`petal_peft.align.geometry`.
    """

    def __init__(
        self,
        size: int = 112,
        template: str = "arcface",
        margin: int = 0,
        padding: float = 0.25,
        fallback: str = "whole-image",
        landmarker: Any | None = None,
    ) -> None:
        self.check_settings(size, template, margin, padding, fallback)
        self.size, self.template_name, self.margin, self.padding = size, template, margin, padding
        self.template = landmark_template(template, size, margin, padding)
        self.out_size = size + 2 * margin
        self.fallback = fallback
        self.landmarker = landmarker if landmarker is not None else FaceLandmarker()

    @staticmethod
    def check_settings(
        size: int = 112,
        template: str = "arcface",
        margin: int = 0,
        padding: float = 0.25,
        fallback: str = "whole-image",
    ) -> None:
        """Raise ValueError naming the bad setting (without loading dlib)."""
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}.")
        landmark_template(template, size, margin, padding)

    def settings(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "template": self.template_name,
            "margin": self.margin,
            "padding": self.padding if self.template_name == "dlib" else None,
            "fallback": self.fallback,
        }

    def __call__(self, image: Any) -> AlignedFace:
        img = as_rgb_uint8(image)
        marks = self.landmarker(img)
        if marks.found or self.fallback == "whole-image":
            out, matrix = warp_to_template(img, marks.points, self.template, self.out_size)
            return AlignedFace(out, marks, matrix, "detected" if marks.found else "whole-image")
        if self.fallback == "resize":
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            out = torch.nn.functional.interpolate(x, size=(self.out_size,) * 2, mode="bilinear", antialias=True)
            out = out[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            return AlignedFace(out, marks, None, "resize")
        return AlignedFace(None, marks, None, "skip")


def image_aligner(output_size: int = 112, template: str = "arcface") -> Callable[[Any], Any]:
    """``align(pil_image) -> pil_image``: the detected face warped to ``template`` at ``output_size`` pixels.

    The form inference pipelines (``petal-peft embed --align``) use; unlike :class:`FaceAligner` it has no
    fallback: an image without a detected face raises ValueError, since embedding a guess would pollute an index.
    """
    from PIL import Image

    aligner = FaceAligner(size=output_size, template=template, fallback="skip")

    def align(image: Any) -> Any:
        face = aligner(image)
        if face.image is None:
            raise ValueError("no face found in the image (align cannot place the landmarks).")
        return Image.fromarray(face.image)

    return align
