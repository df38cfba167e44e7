"""What every face dataset shares: item format, per-sample seeding, epoch handling, image decoding."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from petal_peft.data.errors import DataValidationError
from petal_peft.data.transforms import STREAM_FLIP, FaceTransform, LowResolutionDegradation, sample_generator
from petal_peft.images import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = ["FaceDataset", "FaceSubset", "IMAGE_EXTENSIONS", "open_rgb"]


def open_rgb(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Decode an image (path or encoded bytes) into 8-bit RGB with :func:`petal_peft.images.read_image`; bad
    data (and images over the size cap) raise DataValidationError."""
    try:
        return read_image(source, name=name)
    except ImageReadError as exc:
        raise DataValidationError(str(exc)) from None


class FaceDataset(Dataset):
    """Base class. Subclasses fill ``self.labels`` and ``self.num_classes`` and implement ``load_image``
    (and ``image_source`` so validation can check the encoded file without decoding it).

    Items are ``{"pixel_values": float [3, S, S], "labels": long scalar}``, plus ``"quality_level"`` (float
    scalar, 1 = untouched) on every item when a degradation is configured, so batches always collate.
    Randomness (flip, degradation) is seeded from ``(seed, index, epoch)``: call :meth:`set_epoch` each
    epoch. The epoch lives in shared memory, so persistent DataLoader workers see the change too.
    """

    labels: list[int]
    num_classes: int

    def __init__(
        self,
        transform: FaceTransform | None = None,
        degradation: LowResolutionDegradation | None = None,
        seed: int = 0,
    ) -> None:
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.transform = transform if transform is not None else FaceTransform()
        self.degradation = degradation
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # ---- to implement ------------------------------------------------------------------------------------
    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def image_source(self, index: int) -> tuple[str, str | bytes]:
        """``(name for messages, path or encoded bytes)`` of one image."""
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}.")
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.labels)

    def _index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images.")
        return index

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._index(index)
        epoch = self.epoch
        img = self.load_image(index)
        quality_level = None
        if self.degradation is not None:
            result = self.degradation.degrade(img, index=index, epoch=epoch)
            img, quality_level = result.image, result.quality_level
        flip_generator = sample_generator(self.seed, index, epoch, STREAM_FLIP)
        item = {
            "pixel_values": self.transform(img, generator=flip_generator),
            "labels": torch.tensor(self.labels[index], dtype=torch.long),
        }
        if quality_level is not None:
            item["quality_level"] = torch.tensor(quality_level, dtype=torch.float32)
        return item

    def identities(self) -> int:
        """Number of distinct non-ignored labels actually present."""
        return len({label for label in self.labels if label >= 0})


class FaceSubset(FaceDataset):
    """A view on some indices of a FaceDataset that keeps ``labels``/``num_classes`` (torch's Subset loses
    them).

    Items are produced by the parent with the parent's index, so seeding does not depend on the view.
    """

    def __init__(self, dataset: FaceDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.labels = [dataset.labels[i] for i in self.indices]
        self.num_classes = dataset.num_classes

    @property
    def transform(self) -> FaceTransform:  # type: ignore[override]
        return self.dataset.transform

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset[self.indices[self._index(index)]]

    def load_image(self, index: int) -> Image.Image:
        return self.dataset.load_image(self.indices[index])

    def image_source(self, index: int) -> tuple[str, str | bytes]:
        return self.dataset.image_source(self.indices[index])

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
