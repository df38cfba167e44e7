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

__all__ = ["build_face_dataset", "detect_source_kind", "split_folder"]

#: sub-folder names of the Hugging Face ``imagefolder`` layout with splits (``root/train/<label>/*.jpg``)
SPLIT_NAMES = ("train", "training", "validation", "valid", "val", "test", "eval", "dev")


def split_folder(root: Path, split: str = "train") -> Path | None:
    """``root/<split>`` when ``root`` has the split layout of Hugging Face's ``imagefolder`` (only split-named
    sub-folders, each holding one sub-folder per label), else None."""
    try:
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return None
    names = {p.name.lower(): p for p in subdirs}
    if not subdirs or not set(names) <= set(SPLIT_NAMES):
        return None
    chosen = names.get(split) or (names.get("training") if split == "train" else None)
    if chosen is None:
        raise DataValidationError(
            f"{root} holds the splits {sorted(names)} (Hugging Face imagefolder layout) but no {split!r} split; "
            f"pass the split folder itself, e.g. {root / sorted(names)[0]}."
        )
    if not any(p.is_dir() for p in chosen.iterdir()):
        return None
    return chosen


def detect_source_kind(source: str | os.PathLike) -> str:
    """``"recordio"``, ``"tinyface_eval"``, ``"folder"``, ``"hf_saved"`` or ``"hf_hub"`` for ``source``.

    A TinyFace root (holding ``Training_Set/``) and a Hugging Face ``imagefolder`` layout with splits
    (``root/train/<label>/*.jpg``) count as folders of their training set.
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
    - a folder with split sub-folders (``train/<label>/*.jpg``, ``test/...``: the ``imagefolder`` layout of
      Hugging Face datasets): :class:`FaceImageFolder` on ``train/``
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
        name = s.removeprefix("hf://")
        if not name.strip("/"):
            raise DataValidationError(f"{s}: give a dataset after hf://, e.g. hf://user/faces or hf://./folder.")
        return load_hf_face_dataset(name, **kwargs)
    root = Path(s).expanduser()
    if (root / "Training_Set").is_dir():
        root = root / "Training_Set"
    else:
        root = split_folder(root) or root
    return FaceImageFolder(root, **kwargs)
