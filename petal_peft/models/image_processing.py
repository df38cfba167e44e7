"""The image processor saved beside a face backbone: resize, then (x / 255 - 0.5) / 0.5, as the reference does."""

from __future__ import annotations

from typing import Any

__all__ = ["FACE_IMAGE_MEAN", "FACE_IMAGE_STD", "face_image_processor"]

FACE_IMAGE_MEAN = [0.5, 0.5, 0.5]
FACE_IMAGE_STD = [0.5, 0.5, 0.5]
_BICUBIC = 3  # PIL.Image.BICUBIC: the reference's evaluation resizes aligned faces bicubically


def face_image_processor(image_size: int) -> Any:
    """A ViT image processor for ``image_size`` px aligned RGB faces normalised to [-1, 1].

    The PIL one: torchvision is not a dependency (both save the same ``ViTImageProcessor`` config).
    """
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": int(image_size), "width": int(image_size)},
        resample=_BICUBIC,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(FACE_IMAGE_MEAN),
        image_std=list(FACE_IMAGE_STD),
    )
