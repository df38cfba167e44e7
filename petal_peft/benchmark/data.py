"""What a data source hands the protocol: adaptation identities, gate-calibration images, evaluation splits.

Every source (synthetic identities, real faces, a folder of identities) produces the same
:class:`BenchmarkData`, so training, evaluation and the report do not know where the images came from.
Images are uint8 tensors ``[N, 3, S, S]`` at the base model's input size ``S``; probes are already degraded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..images import to_rgb8
from ..registry import Registry

if TYPE_CHECKING:
    from .settings import BenchmarkSettings

__all__ = [
    "DATA_SOURCES",
    "DISTRACTOR",
    "BenchmarkData",
    "EvalSplit",
    "benchmark_data",
    "calibration_images",
    "degrade_images",
    "random_verification_pairs",
    "stack_images",
]

DISTRACTOR = -100  # petal_peft.evaluation.DISTRACTOR_LABEL

#: name -> ``source(settings, image_size) -> BenchmarkData``
DATA_SOURCES = Registry("benchmark data source")


@dataclass
class EvalSplit:
    """One evaluation group: degraded probes against a sharp gallery, and sharp 1:1 pairs.

    ``sharp`` holds every sharp image of the split once; the gallery and both sides of each verification pair
    are indices into it (a sharp image gets the same embedding whatever its role in every evaluation mode).
    ``pair_a``, ``pair_b``, ``same`` are ordered so that ``kfold_verification_accuracy``'s ten contiguous folds
    are the intended ones.
    """

    probes: torch.Tensor
    probe_labels: np.ndarray
    sharp: torch.Tensor
    gallery_index: np.ndarray
    gallery_labels: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    same: np.ndarray

    def __post_init__(self) -> None:
        for name in ("probes", "sharp"):
            x = getattr(self, name)
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"{name} must be uint8 [N, 3, S, S], got {x.dtype} {tuple(x.shape)}.")
        n = len(self.sharp)
        for name in ("gallery_index", "pair_a", "pair_b"):
            idx = np.asarray(getattr(self, name), dtype=np.int64)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"{name} indexes outside the {n} sharp images.")
            setattr(self, name, idx)
        if len(self.probe_labels) != len(self.probes) or len(self.gallery_labels) != len(self.gallery_index):
            raise ValueError("every probe and gallery entry needs one label.")
        if not len(self.pair_a) == len(self.pair_b) == len(self.same):
            raise ValueError("pair_a, pair_b and same must have the same length.")
        self.same = np.asarray(self.same, dtype=bool)

    def counts(self) -> dict[str, int]:
        labels = np.asarray(self.gallery_labels)
        return {
            "probes": int(len(self.probes)),
            "probe_identities": int(len(set(np.asarray(self.probe_labels).tolist()))),
            "gallery": int(len(labels)),
            "gallery_distractors": int((labels == DISTRACTOR).sum()),
            "pairs": int(len(self.same)),
            "genuine_pairs": int(self.same.sum()),
            "sharp_images": int(len(self.sharp)),
        }


@dataclass
class BenchmarkData:
    """Everything the protocol needs from a source; ``tag`` labels every table and figure."""

    description: str
    real_faces: bool
    image_size: int
    adapt: dict[str, list[Image.Image]]  # identity -> sharp images at image_size (written out for train())
    calib_sharp: torch.Tensor
    calib_low: torch.Tensor
    splits: dict[str, EvalSplit]  # "val" (choosing the best variant) and "eval"
    tag: str = ""  # short data label for plot titles, e.g. "synthetic identities (not faces)"
    terms: str = ""  # the data's terms of use, printed under tables
    summary: dict[str, Any] = field(default_factory=dict)  # group and split counts, for the record


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(to_rgb8(image), dtype=np.uint8)).permute(2, 0, 1)


def stack_images(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size]; images of another size are resized (bicubic)."""
    out = []
    for img in images:
        img = to_rgb8(img)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        out.append(pil_to_uint8(img))
    if not out:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.stack(out)


def degrade_images(images: Sequence[Image.Image], sizes: tuple[int, int], seed: int) -> torch.Tensor:
    """Probe-like copies (``LowResolutionDegradation``, capture short side in ``sizes``), seeded per index."""
    from ..data import LowResolutionDegradation

    degrade = LowResolutionDegradation(min_size=sizes[0], max_size=sizes[1], seed=seed)
    return torch.stack([pil_to_uint8(degrade.degrade(img, index=i).image) for i, img in enumerate(images)])


def calibration_images(
    adapt: dict[str, list[Image.Image]], count: int, train_sizes: tuple[int, int], image_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of adaptation images, sharp and degraded like training images (for the gate)."""
    flat = [img for imgs in adapt.values() for img in imgs]
    if not flat:
        raise ValueError("the adaptation group holds no images.")
    rng = np.random.default_rng(1234)
    pick = rng.choice(len(flat), size=min(count, len(flat)), replace=False)
    calib = [flat[i] for i in pick]
    return stack_images(calib, image_size), degrade_images(calib, train_sizes, seed=33)


def random_verification_pairs(
    labels: np.ndarray, num_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half genuine, half impostor pairs over images with ``labels`` (seeded, shuffled)."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    gen, imp = np.flatnonzero(same), np.flatnonzero(~same)
    half = min(num_pairs // 2, len(gen), len(imp))
    if half < 5:
        raise ValueError(f"too few verification pairs ({half} genuine); use more identities or images.")
    pick = np.concatenate([rng.choice(gen, half, replace=False), rng.choice(imp, half, replace=False)])
    pick = pick[rng.permutation(len(pick))]
    return i[pick], j[pick], same[pick]


def benchmark_data(
    s: BenchmarkSettings, image_size: int, adapt: dict[str, list[Image.Image]], splits: dict[str, EvalSplit], **fields
) -> BenchmarkData:
    """What every source returns: its adaptation set and splits, and the gate-calibration images the settings ask
    for, drawn from the adaptation set (``fields``: the description, tag, terms and summary)."""
    sharp, low = calibration_images(adapt, s.calibration_images, s.capture_sizes("train", image_size), image_size)
    return BenchmarkData(image_size=image_size, adapt=adapt, calib_sharp=sharp, calib_low=low, splits=splits, **fields)
