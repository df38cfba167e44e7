"""Training data: the dataset with probe-like degradations, and an epoch-seeded sampler.

The order of images depends only on ``(seed, epoch)``, never on global RNG state or on how far a previous
process got, so a resumed run sees the same batches as an uninterrupted one, and N processes together see
the same global batches as one process (Accelerate deals consecutive batches of this order to the processes).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..data import (
    DataValidationError,
    FaceDataset,
    FaceSubset,
    FaceTransform,
    LowResolutionDegradation,
    TinyFaceEvalSplit,
    build_face_dataset,
    find_unusable_images,
)
from ..data.validation import validate_labels
from .config import FaceAdapterTrainingConfig
from .objectives import needs_labels

__all__ = ["EpochShuffleSampler", "build_train_dataloader", "build_train_dataset", "drop_unusable_images"]


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation of ``range(num_samples)`` per epoch, drawn from ``(seed, epoch)`` alone.

    (No attribute named ``generator``: Accelerate would otherwise seed one from the global RNG.)
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else int(epoch)
        seed = int(np.random.SeedSequence([self.seed, epoch, 0x5A4D]).generate_state(1, np.uint64)[0])
        g = torch.Generator().manual_seed(seed)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation())

    def __len__(self) -> int:
        return self.num_samples


def drop_unusable_images(dataset: FaceDataset) -> tuple[FaceDataset, list[str]]:
    """``dataset`` without the images that fail the validation checks, and a line per dropped image.

    The checks are those that otherwise stop the run (every image's header and end marker, a full decode of
    256 evenly spaced images), so an image damaged only in its middle is still read, and fails, when its turn
    comes. Raises DataValidationError when fewer than two identities keep an image.
    """
    problems = find_unusable_images(dataset)
    if not problems:
        return dataset, []
    bad = {index for index, _ in problems}
    kept = FaceSubset(dataset, [i for i in range(len(dataset)) if i not in bad])
    what = getattr(dataset, "description", None) or type(dataset).__name__
    validate_labels(kept.labels, kept.num_classes, f"{what} without its {len(bad)} unusable images")
    return kept, [message for _, message in problems]


def build_train_dataset(
    config: FaceAdapterTrainingConfig, source: str, image_size: int, mean: list[float], std: list[float]
) -> FaceDataset:
    """The training set at the model's input size, a ``degrade_fraction`` of it degraded per (image, epoch).

    Bad data raises :class:`~petal_peft.data.DataValidationError` here, before any model is built. With
    ``config.skip_corrupt_images`` unreadable images are left out instead; the returned dataset's
    ``skipped_images`` lists them (one "path: problem" line each; empty otherwise).
    """
    transform = FaceTransform(image_size=image_size, mean=mean, std=std, horizontal_flip=config.horizontal_flip)
    degradation = None
    if config.degrade_fraction > 0:
        degradation = LowResolutionDegradation(
            min_size=config.degrade_min_size,
            max_size=config.degrade_max_size,
            p=config.degrade_fraction,
            seed=config.seed,
        )
    skip = config.skip_corrupt_images
    kwargs = dict(transform=transform, degradation=degradation, seed=config.seed, check_images=not skip)
    dataset = _labelled_or_not(config, source, kwargs)
    if isinstance(dataset, TinyFaceEvalSplit):
        raise DataValidationError(
            f"--train_data {source} is a TinyFace evaluation split (Probe/, Gallery_Match/); training needs "
            "one subfolder per identity (e.g. TinyFace's Training_Set)."
        )
    skipped: list[str] = []
    if skip:
        dataset, skipped = drop_unusable_images(dataset)
    if needs_labels(config.objective) and dataset.num_classes < 2:
        raise DataValidationError(
            f"--train_data {source}: a margin head needs >= 2 identities, found {dataset.num_classes}."
        )
    if config.max_train_samples is not None and config.max_train_samples < len(dataset):
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(dataset), size=config.max_train_samples, replace=False))
        dataset = FaceSubset(dataset, keep.tolist())
    dataset.skipped_images = skipped
    return dataset


def _labelled_or_not(config: FaceAdapterTrainingConfig, source: str, kwargs: dict) -> FaceDataset:
    """The training set: label-free sources (a plain image folder, a dataset without a label column) are read
    without labels for the ``distill`` objective and refused, in one line, for the objectives that need them."""
    from ..data.unlabeled import build_unlabeled_face_dataset, label_free_reason

    reason = label_free_reason(source)
    if reason is None:
        try:
            return build_face_dataset(source, **kwargs)
        except DataValidationError as err:
            if "missing label column" not in str(err):
                raise
            reason = "a dataset without a 'label' column"
    if needs_labels(config.objective):
        raise DataValidationError(
            f"--objective {config.objective} needs identity labels, but --train-data {source} is {reason}: "
            "use --objective distill (label-free), or give the identities (one subfolder per identity)."
        )
    return build_unlabeled_face_dataset(source, **kwargs)


def build_train_dataloader(
    config: FaceAdapterTrainingConfig, dataset: FaceDataset, num_processes: int
) -> tuple[DataLoader, EpochShuffleSampler]:
    """Batches of ``per_device_train_batch_size``; incomplete last batches are dropped (insightface style)."""
    global_batch = config.per_device_train_batch_size * num_processes
    if len(dataset) < global_batch:
        raise DataValidationError(
            f"the training set has {len(dataset)} images, fewer than one global batch "
            f"({config.per_device_train_batch_size} per process x {num_processes} processes = {global_batch}); "
            "lower --per_device_train_batch_size."
        )
    sampler = EpochShuffleSampler(len(dataset), config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=sampler,
        num_workers=config.dataloader_num_workers,
        drop_last=True,
        # its own generator, so making an iterator never draws from the global RNG (dropout's)
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=config.dataloader_num_workers > 0,
    )
    return loader, sampler
