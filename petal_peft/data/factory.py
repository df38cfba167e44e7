"""One entry point that picks the right dataset class from what a ``source`` string points at."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from petal_peft.data.base import FaceDataset
from petal_peft.data.errors import DataValidationError
from petal_peft.data.folder import FaceImageFolder, TinyFaceEvalSplit
from petal_peft.data.hf import _is_saved_dataset, load_hf_face_dataset
from petal_peft.data.recordio import RecordIODataset

__all__ = ["build_face_dataset", "detect_source_kind"]


def detect_source_kind(source: str | os.PathLike) -> str:
    """``"recordio"``, ``"tinyface_eval"``, ``"folder"``, ``"hf_saved"`` or ``"hf_hub"`` for ``source``.

    A TinyFace root (holding ``Training_Set/``) counts as a folder of its training set.
    """
    s = str(source)
    if s.startswith("hf://"):
        return "hf_hub"
    p = Path(s).expanduser()
    if p.suffix in (".rec", ".idx"):
        return "recordio"
    if p.is_dir():
        if (p / "train.rec").is_file() or (p / "train.idx").is_file():
            return "recordio"
        if (p / "Probe").is_dir() and (p / "Gallery_Match").is_dir():
            return "tinyface_eval"
        if _is_saved_dataset(p):
            return "hf_saved"
        return "folder"
    if p.with_name(p.name + ".rec").is_file():
        return "recordio"
    if p.exists():
        raise DataValidationError(f"{s} is a file but not a .rec/.idx; give a folder, a RecordIO path or a Hub id.")
    if s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise DataValidationError(f"data source {s} does not exist.")
    return "hf_hub"


def build_face_dataset(source: str | os.PathLike, **kwargs: Any) -> FaceDataset:
    """Build a face dataset from a path or Hub id.

    - ``*.rec`` / ``*.idx`` / a prefix with ``.rec`` / a folder with ``train.rec``: :class:`RecordIODataset`
    - a folder with ``Probe/`` and ``Gallery_Match/``: :class:`TinyFaceEvalSplit`
    - a TinyFace root with ``Training_Set/``: :class:`FaceImageFolder` on ``Training_Set``
    - a ``save_to_disk`` folder, a Hub id, or ``hf://<id>``: :func:`load_hf_face_dataset`
    - any other folder: :class:`FaceImageFolder` (one subfolder per identity)

    ``kwargs`` go to the chosen class (e.g. ``transform``, ``degradation``, ``seed``, ``check_images``; for
    Hugging Face sources also ``image_column``, ``label_column``, ``split``).
    """
    kind = detect_source_kind(source)
    s = str(source)
    if kind == "recordio":
        return RecordIODataset(s, **kwargs)
    if kind == "tinyface_eval":
        return TinyFaceEvalSplit(s, **kwargs)
    if kind in ("hf_saved", "hf_hub"):
        return load_hf_face_dataset(s.removeprefix("hf://"), **kwargs)
    root = Path(s).expanduser()
    if (root / "Training_Set").is_dir():
        root = root / "Training_Set"
    return FaceImageFolder(root, **kwargs)
