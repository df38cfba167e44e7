"""Face detection and dlib's 5 landmarks (needs the ``align`` extra: dlib-bin and face-recognition-models).

dlib's HOG frontal face detector finds the face (tried on the image upsampled once, then at its own size; the
largest face wins, the one nearest the centre on a tie), and dlib's 5-point shape predictor places the eye corners
and the base of the nose inside that box. When no face is found, the landmarks are predicted inside the whole
image taken as the face box: for the tightly cropped photos of face sets (LFW's crops, already aligned crops)
that is close to where a detector would have put it, and the image is kept, marked ``found=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from petal_peft.align.model_files import dlib_model_file
from petal_peft.extras import require
from petal_peft.images import to_rgb8

__all__ = ["FaceLandmarker", "Landmarks", "import_dlib"]

SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"


def import_dlib() -> Any:
    """dlib, or a MissingExtraError (an ImportError) saying how to install it."""
    return require("dlib", "align", "face detection and landmarks")


@dataclass(frozen=True)
class Landmarks:
    """dlib's 5 landmarks [5, 2] (x, y pixels), the face box (left, top, right, bottom), and whether a detector
    found the face (False: the box is the whole image)."""

    points: np.ndarray
    box: tuple[int, int, int, int]
    found: bool
    num_faces: int


def as_rgb_uint8(image: Any) -> np.ndarray:
    """An RGB uint8 array [H, W, 3] from a PIL image or an array (grey images become RGB)."""
    arr = np.asarray(to_rgb8(image) if isinstance(image, Image.Image) else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image must be [height, width, 3] RGB, got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        raise TypeError(f"an image array must be uint8 (0-255), got {arr.dtype}.")
    return np.array(arr[:, :, :3], order="C")  # a writable copy


class FaceLandmarker:
    """Detect the main face of an image and return dlib's 5 landmarks (see the module docstring)."""

    def __init__(self, upsample: tuple[int, ...] = (1, 0)) -> None:
        dlib = import_dlib()
        self._dlib = dlib
        self.upsample = tuple(upsample)
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_file(SHAPE_PREDICTOR_5)))

    def _main_face(self, boxes: Any, width: int, height: int) -> Any:
        cx, cy = width / 2, height / 2

        def key(b: Any) -> tuple[float, float]:
            centre = ((b.left() + b.right()) / 2 - cx) ** 2 + ((b.top() + b.bottom()) / 2 - cy) ** 2
            return (-float(b.width() * b.height()), centre)

        return min(boxes, key=key)

    def __call__(self, image: Any) -> Landmarks:
        img = as_rgb_uint8(image)
        height, width = img.shape[:2]
        boxes: list[Any] = []
        for level in self.upsample:
            boxes = list(self.detector(img, level))
            if boxes:
                break
        if boxes:
            box = self._main_face(boxes, width, height)
        else:
            box = self._dlib.rectangle(0, 0, width - 1, height - 1)
        shape = self.predictor(img, box)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
        return Landmarks(points, (box.left(), box.top(), box.right(), box.bottom()), bool(boxes), len(boxes))
