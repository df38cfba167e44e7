"""Face images without identity labels: a plain folder of images, or a dataset without a label column.

Label-free training (the ``distill`` objective) needs only the pictures. Items keep the usual format, with
``labels`` = :data:`UNLABELED` (-100, the ignore index) so batches collate as for labelled data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petal_peft.data.base import IMAGE_EXTENSIONS, FaceDataset
from petal_peft.data.errors import DataValidationError
from petal_peft.data.folder import _PathDataset, _require_dir, folder_images
from petal_peft.data.transforms import FaceTransform, LowResolutionDegradation
from petal_peft.data.validation import validate_face_dataset

__all__ = ["UNLABELED", "UnlabeledImageFolder", "build_unlabeled_face_dataset", "label_free_reason"]

UNLABELED = -100


class UnlabeledImageFolder(_PathDataset):
    """``root/*.jpg``: face images in one folder, no identities (``labels`` all :data:`UNLABELED`)."""

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
    ) -> None:
        super().__init__(transform, degradation, seed)
        self.root = Path(root)
        self.description = f"image folder {self.root} (no identity labels)"
        _require_dir(self.root, "image folder")
        self.paths = folder_images(self.root, extensions)
        if not self.paths:
            raise DataValidationError(f"image folder {self.root} holds no images ({', '.join(extensions)}).")
        self.labels = [UNLABELED] * len(self.paths)
        self.num_classes = 0
        validate_face_dataset(
            self, check_images=check_images, decode_limit=decode_limit, min_identities=0, allow_ignore=True
        )


def label_free_reason(source: str | os.PathLike) -> str | None:
    """Why ``source`` has no identity labels (``"a plain folder of images"``, ``"a dataset without a 'label'
    column"``), or None when it has them or cannot tell without loading it."""
    from petal_peft.data.factory import detect_source_kind

    path = Path(str(source)).expanduser()
    try:
        kind = detect_source_kind(source)
    except DataValidationError:
        return None
    if kind == "folder" and path.is_dir():
        has_subfolders = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
        if not has_subfolders and folder_images(path, IMAGE_EXTENSIONS):
            return "a plain folder of images, no identity subfolders"
    if kind == "hf_saved":
        try:
            import datasets

            ds = datasets.load_from_disk(str(path))
        except Exception:  # noqa: BLE001 (any loader problem is reported when the data are really loaded)
            return None
        columns = ds.column_names
        if isinstance(columns, dict):  # a DatasetDict: the training split's columns
            columns = columns.get("train") or next(iter(columns.values()))
        if "label" not in columns:
            return f"a dataset without a 'label' column (columns: {list(columns)})"
    return None


def build_unlabeled_face_dataset(source: str | os.PathLike, **kwargs: Any) -> FaceDataset:
    """The images of ``source`` without labels: a plain folder (:class:`UnlabeledImageFolder`) or a
    Hugging Face dataset read with ``label_column=None``."""
    from petal_peft.data.factory import detect_source_kind
    from petal_peft.data.hf import load_hf_face_dataset

    kind = detect_source_kind(source)
    if kind in ("hf_saved", "hf_hub"):
        kwargs.pop("min_identities", None)
        return load_hf_face_dataset(str(source).removeprefix("hf://"), label_column=None, **kwargs)
    if kind == "folder":
        return UnlabeledImageFolder(source, **kwargs)
    raise DataValidationError(f"{source}: only a plain image folder or a dataset can be read without labels.")
