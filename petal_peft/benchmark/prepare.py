"""Image preparation: how a face photograph becomes the base model's input crop, by name.

A preparation is built by ``factory(image_size)`` and maps a PIL image to an RGB PIL image of
``image_size x image_size``. The real-face pipeline applies it to every image before anything else
(adaptation, gallery, probes before their degradation, pairs), so a landmark aligner plugs in here:
``IMAGE_PREPARATIONS.register("my-aligner", lambda image_size: my_align_fn)`` and ``prepare="my-aligner"``.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from ..images import to_rgb8
from ..registry import Registry

__all__ = ["IMAGE_PREPARATIONS", "ImagePreparation", "arcface_alignment", "build_preparation", "center_crop"]

ImagePreparation = Callable[[Image.Image], Image.Image]

#: name -> ``factory(image_size) -> ImagePreparation``
IMAGE_PREPARATIONS = Registry("image preparation")


@IMAGE_PREPARATIONS.register("center-crop")
def center_crop(image_size: int, fraction: float = 1.0) -> ImagePreparation:
    """The central square (``fraction`` of the short side), resized to ``image_size`` (bicubic).

    Suited to LFW's 150x150 crops (the centre of the deep-funneled images: the face fills most of the frame)
    and to already aligned 112x112 crops (kept whole): no landmarks, so faces are only roughly aligned.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")

    def prepare(image: Image.Image) -> Image.Image:
        image = to_rgb8(image)
        w, h = image.size
        side = max(1, round(min(w, h) * fraction))
        left, top = (w - side) // 2, (h - side) // 2
        if side != w or side != h:
            image = image.crop((left, top, left + side, top + side))
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        return image

    return prepare


@IMAGE_PREPARATIONS.register("arcface")
def arcface_alignment(image_size: int) -> ImagePreparation:
    """dlib's face detector and 5 landmarks, the face warped to the ArcFace 112x112 template (scaled to
    ``image_size``), by ``petal_peft.align.FaceAligner``; where no face is found, the landmarks are placed in the
    whole image (the aligner's ``whole-image`` fallback). The framing the real face base is built on. Needs the
    ``align`` extra (dlib)."""
    try:
        from ..align import FaceAligner
    except ImportError as err:
        raise ImportError(f"the 'arcface' preparation needs petal_peft.align (face alignment): {err}") from None
    import numpy as np

    aligner = FaceAligner(size=image_size, template="arcface", fallback="whole-image")

    def prepare(image: Image.Image) -> Image.Image:
        return Image.fromarray(aligner(np.asarray(to_rgb8(image))).image)

    return prepare


def build_preparation(name: str, image_size: int) -> ImagePreparation:
    """The preparation registered as ``name`` for inputs of ``image_size``; its output is checked per image."""
    inner = IMAGE_PREPARATIONS.build(name, image_size=image_size)

    def prepare(image: Image.Image) -> Image.Image:
        out = inner(image)
        if not isinstance(out, Image.Image):
            raise TypeError(f"image preparation {name!r} returned {type(out).__name__}, not a PIL image.")
        if out.size != (image_size, image_size):
            raise ValueError(f"image preparation {name!r} returned {out.size[0]}x{out.size[1]}, not {image_size}.")
        return to_rgb8(out)

    return prepare
