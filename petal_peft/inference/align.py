"""The hook for ``--align``: face alignment comes from the optional ``align`` extra (dlib), when installed.

The contract is one function, ``petal_peft.align.image_aligner(output_size) -> Callable[[PIL.Image], PIL.Image]``,
returning a callable that detects the face in an image and warps it to the aligned crop of ``output_size`` pixels
(raising ValueError when it finds no face). Without that module ``--align`` is a one-line error naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from PIL import Image

from petal_peft.extras import install_hint

ALIGN_EXTRA = install_hint("align")
ALIGNER_FACTORY = "image_aligner"

Aligner = Callable[[Image.Image], Image.Image]


def load_aligner(output_size: int) -> Aligner:
    """The aligner of the ``align`` extra, or a ValueError saying what to install."""
    return _align_factory()(output_size=output_size)


def require_aligner() -> None:
    """Fail early (before any model is loaded) when ``--align`` cannot work."""
    _align_factory()


def _align_factory() -> Callable[..., Aligner]:
    try:
        module = importlib.import_module("petal_peft.align")
    except ImportError as err:
        raise ValueError(
            f"--align needs the face-alignment extra, which this installation lacks ({err}): {ALIGN_EXTRA}; or "
            "embed crops that are already aligned, without --align."
        ) from None
    factory = getattr(module, ALIGNER_FACTORY, None)
    if factory is None:
        raise ValueError(
            f"--align: petal_peft.align has no {ALIGNER_FACTORY}(output_size) function; this petal-peft's parts do "
            "not match (reinstall petal-peft)."
        )
    return factory


class AlignedTransform:
    """``transform(aligner(image))``: alignment before resizing and normalisation (a class, so it pickles)."""

    def __init__(self, transform: Callable[[Image.Image], object], aligner: Aligner) -> None:
        self.transform = transform
        self.aligner = aligner

    def __call__(self, image: Image.Image) -> object:
        return self.transform(self.aligner(image))
