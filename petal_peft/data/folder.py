"""Image folders: identity-per-subfolder training sets and the TinyFace evaluation split."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from petal_peft.data.base import IMAGE_EXTENSIONS, FaceDataset, FaceSubset, open_rgb
from petal_peft.data.errors import DataValidationError
from petal_peft.data.transforms import FaceTransform, LowResolutionDegradation
from petal_peft.data.validation import validate_face_dataset

__all__ = ["FaceImageFolder", "TinyFaceEvalSplit", "natural_key"]

DISTRACTOR_LABEL = -100


def natural_key(text: str) -> list[object]:
    """Sort key treating digit runs as numbers, so identity "10" sorts after "9"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def folder_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """The image files directly in ``folder`` (hidden files skipped), in natural order of their names."""
    exts = tuple(e.lower() for e in extensions)
    with os.scandir(folder) as it:
        files = [
            Path(e.path) for e in it if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(exts)
        ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataValidationError(f"{what} {path} does not exist.")
    if not path.is_dir():
        raise DataValidationError(f"{what} {path} is not a directory.")


class _PathDataset(FaceDataset):
    paths: list[Path]

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def image_source(self, index: int) -> tuple[str, str | bytes]:
        return str(self.paths[index]), str(self.paths[index])


class FaceImageFolder(_PathDataset):
    """``root/<identity>/<image>``: one subfolder per identity (TinyFace ``Training_Set`` layout).

    Identities are the subfolder names in natural order (``classes``), labelled 0..C-1. Files with other
    extensions and hidden files are ignored. Construction fails (DataValidationError) on a missing or empty
    root, an identity folder without images, a single identity, and, with ``check_images``, on unreadable or
    truncated images (see :func:`validate_face_dataset`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: FaceTransform | None = None,
        degradation: LowResolutionDegradation | None = None,
        seed: int = 0,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        check_images: bool = True,
        decode_limit: int | None = 256,
        min_identities: int = 2,
    ) -> None:
        super().__init__(transform, degradation, seed)
        self.root = Path(root)
        self.description = f"image folder {self.root}"
        _require_dir(self.root, "image folder")
        identity_dirs = sorted(
            (Path(e.path) for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )
        if not identity_dirs:
            loose = folder_images(self.root, extensions)
            hint = (
                f" It holds {len(loose)} loose images: put each identity's images in its own subfolder."
                if loose
                else ""
            )
            raise DataValidationError(f"image folder {self.root} is empty: no identity subfolders.{hint}")
        self.classes: list[str] = []
        self.paths = []
        self.labels = []
        empty: list[str] = []
        for label, folder in enumerate(identity_dirs):
            files = folder_images(folder, extensions)
            if not files:
                empty.append(str(folder))
            self.classes.append(folder.name)
            self.paths.extend(files)
            self.labels.extend([label] * len(files))
        if empty:
            listed = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise DataValidationError(
                f"image folder {self.root}: {len(empty)} identity folder(s) hold no images "
                f"(extensions {', '.join(extensions)}): {listed}."
            )
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.num_classes = len(self.classes)
        validate_face_dataset(self, check_images=check_images, decode_limit=decode_limit, min_identities=min_identities)


class TinyFaceEvalSplit(_PathDataset):
    """TinyFace test split: ``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/`` (``root`` may also be the
    TinyFace root holding ``Testing_Set/``).

    Identity = file-name prefix before the first ``_``; identities of probes and mated gallery images share
    labels 0..C-1 (natural order); distractors are labelled -100. Items carry ``"is_probe"`` (bool scalar).
    ``probe`` and ``gallery`` (mated + distractors) are views with ``labels``; ``probe_indices`` and
    ``gallery_indices`` index this dataset, which lists probes first. A ``degradation`` is optional (e.g. to
    simulate harder probes); evaluation normally uses none.
    """

    SUBSETS = ("Probe", "Gallery_Match", "Gallery_Distractor")

    def __init__(
        self,
        root: str | os.PathLike,
        transform: FaceTransform | None = None,
        degradation: LowResolutionDegradation | None = None,
        seed: int = 0,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        check_images: bool = True,
        decode_limit: int | None = 256,
        require_distractors: bool = True,
    ) -> None:
        super().__init__(transform, degradation, seed)
        root = Path(root)
        if not (root / "Probe").is_dir() and (root / "Testing_Set" / "Probe").is_dir():
            root = root / "Testing_Set"
        self.root = root
        self.description = f"TinyFace evaluation split {root}"
        _require_dir(root, "TinyFace evaluation root")
        needed = self.SUBSETS if require_distractors else self.SUBSETS[:2]
        missing = [s for s in needed if not (root / s).is_dir()]
        if missing:
            raise DataValidationError(
                f"TinyFace evaluation root {root} lacks folder(s) {missing}; expected {list(self.SUBSETS)}."
            )
        files = {s: (folder_images(root / s, extensions) if (root / s).is_dir() else []) for s in self.SUBSETS}
        for s in needed:
            if not files[s]:
                raise DataValidationError(f"TinyFace folder {root / s} is empty: no images.")

        def identity(path: Path) -> str:
            if "_" not in path.stem:
                raise DataValidationError(f"{path}: file name has no '_'; TinyFace names are '<identity>_<n>.<ext>'.")
            return path.stem.split("_", 1)[0]

        probe_ids = [identity(p) for p in files["Probe"]]
        match_ids = [identity(p) for p in files["Gallery_Match"]]
        self.classes = sorted(set(probe_ids) | set(match_ids), key=natural_key)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.num_classes = len(self.classes)
        self.paths = files["Probe"] + files["Gallery_Match"] + files["Gallery_Distractor"]
        self.labels = (
            [self.class_to_idx[i] for i in probe_ids]
            + [self.class_to_idx[i] for i in match_ids]
            + [DISTRACTOR_LABEL] * len(files["Gallery_Distractor"])
        )
        n_probe = len(files["Probe"])
        self.probe_indices = list(range(n_probe))
        self.gallery_indices = list(range(n_probe, len(self.paths)))
        self.probe = FaceSubset(self, self.probe_indices)
        self.gallery = FaceSubset(self, self.gallery_indices)
        unmated = sorted(set(probe_ids) - set(match_ids), key=natural_key)
        #: probe identities with no image in Gallery_Match (a closed-set CMC skips such probes).
        self.unmated_identities = unmated
        validate_face_dataset(
            self, check_images=check_images, decode_limit=decode_limit, allow_ignore=True, min_identities=2
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        item["is_probe"] = torch.tensor(self._index(index) < len(self.probe_indices))
        return item
