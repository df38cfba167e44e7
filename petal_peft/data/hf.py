"""Hugging Face ``datasets`` sources (Hub ids, saved datasets, local image folders) as FaceDatasets."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

from petal_peft.data.base import FaceDataset, open_rgb
from petal_peft.data.errors import DataValidationError
from petal_peft.data.folder import natural_key
from petal_peft.data.transforms import FaceTransform, LowResolutionDegradation
from petal_peft.data.validation import validate_face_dataset
from petal_peft.images import to_rgb8

__all__ = ["HFFaceDataset", "load_hf_face_dataset"]

#: names of the generic loaders of ``datasets`` (not datasets themselves)
_BUILDER_NAMES = frozenset(
    {"imagefolder", "audiofolder", "videofolder", "csv", "json", "parquet", "arrow", "text", "webdataset", "pandas"}
)


class HFFaceDataset(FaceDataset):
    """A ``datasets.Dataset`` with an image column and an identity column, as a FaceDataset.

    Integer labels (or a ``ClassLabel``) are used as they are; string labels are mapped to 0..C-1 in natural
    order (``classes`` keeps the names). The image column may hold decoded images, ``{"bytes", "path"}``
    dicts or file paths.
    """

    def __init__(
        self,
        hf_dataset: Any,
        image_column: str = "image",
        label_column: str | None = "label",
        transform: FaceTransform | None = None,
        degradation: LowResolutionDegradation | None = None,
        seed: int = 0,
        *,
        check_images: bool = True,
        decode_limit: int | None = 256,
        min_identities: int = 2,
        description: str | None = None,
    ) -> None:
        import datasets

        super().__init__(transform, degradation, seed)
        if isinstance(hf_dataset, datasets.IterableDataset | datasets.IterableDatasetDict):
            raise DataValidationError(
                "streaming (iterable) datasets are not supported: face training needs len() and random access."
            )
        if not isinstance(hf_dataset, datasets.Dataset):
            raise TypeError(f"expected a datasets.Dataset, got {type(hf_dataset).__name__}.")
        name = getattr(getattr(hf_dataset, "info", None), "dataset_name", None)
        self.description = description or f"dataset {name or '(in memory)'}"
        columns = list(hf_dataset.column_names)
        for role, col in (("image", image_column), ("label", label_column)):
            if col is not None and col not in columns:
                raise DataValidationError(
                    f"{self.description}: missing {role} column {col!r}; columns are {columns}. "
                    f"Pass {role}_column= to name the right one."
                )
        self.image_column, self.label_column = image_column, label_column
        self.hf_dataset = hf_dataset
        if label_column is None:  # label-free training (the distill objective): every image ignored-label
            self.labels, self.classes, self.num_classes = [-100] * len(hf_dataset), None, 0
            min_identities = 0
        else:
            self._read_labels(hf_dataset, label_column)
        # An undecoded view of the image column: validation checks the encoded bytes without decoding.
        self._raw_images = None
        if isinstance(hf_dataset.features[image_column], datasets.Image):
            self._raw_images = hf_dataset.cast_column(image_column, datasets.Image(decode=False))
        validate_face_dataset(
            self,
            check_images=check_images,
            decode_limit=decode_limit,
            min_identities=min_identities,
            allow_ignore=label_column is None,
        )

    def _read_labels(self, hf_dataset: Any, label_column: str) -> None:
        feature = hf_dataset.features[label_column]
        raw = list(hf_dataset[label_column])
        if any(v is None for v in raw):
            raise DataValidationError(f"{self.description}: label column {label_column!r} has missing values.")
        if all(isinstance(v, str) for v in raw):
            self.classes = sorted(set(raw), key=natural_key)
            to_idx = {name: i for i, name in enumerate(self.classes)}
            self.labels = [to_idx[v] for v in raw]
            self.num_classes = len(self.classes)
        else:
            try:
                labels = [int(v) for v in raw]
            except (TypeError, ValueError):
                kinds = sorted({type(v).__name__ for v in raw})
                raise DataValidationError(
                    f"{self.description}: label column {label_column!r} must hold integers or strings, found {kinds}."
                ) from None
            if any(int(v) != v for v in raw):
                raise DataValidationError(
                    f"{self.description}: label column {label_column!r} holds non-integer numbers."
                )
            self.labels = labels
            names = getattr(feature, "names", None)
            self.classes = list(names) if names else None
            self.num_classes = len(names) if names else (max(labels) + 1 if labels else 0)

    def _value_to_source(self, index: int, value: Any) -> tuple[str, str | bytes | Image.Image]:
        name = f"{self.description} row {index}"
        if isinstance(value, dict):
            if value.get("bytes"):
                return (f"{name} ({value['path']})" if value.get("path") else name), value["bytes"]
            if value.get("path"):
                return f"{name} ({value['path']})", value["path"]
        if isinstance(value, str | os.PathLike):
            return f"{name} ({value})", str(value)
        if isinstance(value, bytes):
            return name, value
        if isinstance(value, Image.Image):
            return name, value
        raise DataValidationError(f"{name}: image column holds {type(value).__name__}, not an image.")

    def image_source(self, index: int) -> tuple[str, str | bytes]:
        table = self._raw_images if self._raw_images is not None else self.hf_dataset
        name, source = self._value_to_source(index, table[index][self.image_column])
        if isinstance(source, Image.Image):  # already decoded in memory: hand over PNG bytes to check
            buf = io.BytesIO()
            source.save(buf, format="PNG")
            return name, buf.getvalue()
        return name, source

    def load_image(self, index: int) -> Image.Image:
        try:
            value = self.hf_dataset[index][self.image_column]
        except Exception as exc:  # datasets raises PIL/OSError from inside its decoder
            raise DataValidationError(f"{self.description} row {index}: cannot decode image ({exc}).") from exc
        name, source = self._value_to_source(index, value)
        if isinstance(source, Image.Image):
            return to_rgb8(source)  # 16-bit images scaled, not clipped
        return open_rgb(source, name)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_hf_face_dataset(
    dataset_name_or_path: Any,
    image_column: str = "image",
    label_column: str | None = "label",
    split: str = "train",
    transform: FaceTransform | None = None,
    degradation: LowResolutionDegradation | None = None,
    seed: int = 0,
    *,
    revision: str | None = None,
    check_images: bool = True,
    decode_limit: int | None = 256,
    min_identities: int = 2,
    **load_kwargs: Any,
) -> HFFaceDataset:
    """Load a face dataset through ``datasets`` and wrap it as a FaceDataset.

    ``dataset_name_or_path`` may be a Hub id, a folder written by ``save_to_disk``, a local image folder
    (loaded with the ``imagefolder`` builder: identity = subfolder, label column ``label``), or an already
    loaded ``datasets.Dataset`` / ``DatasetDict``. Remote code is never trusted.
    """
    import datasets

    if load_kwargs.get("trust_remote_code"):
        raise ValueError("trust_remote_code=True is not allowed: petal-peft only loads data, never code.")
    load_kwargs.pop("trust_remote_code", None)
    ds = dataset_name_or_path
    description = None
    if isinstance(ds, str | os.PathLike):
        description = f"dataset {ds}"
        path = Path(ds)
        if path.is_dir():
            if _is_saved_dataset(path):
                ds = datasets.load_from_disk(str(path))
            else:
                try:
                    ds = datasets.load_dataset("imagefolder", data_dir=str(path), split=split, **load_kwargs)
                except ValueError as err:  # no images, no such split
                    raise DataValidationError(f"cannot read {path} as an image folder: {err}") from None
        elif path.exists():
            raise DataValidationError(f"{path} is a file; expected a dataset folder or a Hub dataset id.")
        elif str(ds).startswith((".", "/", "~")) or str(ds).count("/") > 1:
            raise DataValidationError(f"dataset folder {ds} does not exist.")
        elif str(ds).lower() in _BUILDER_NAMES:
            raise DataValidationError(
                f"{ds!r} names a generic loader of the datasets library, not a dataset. For images on disk pass "
                "the folder itself: DIR/<identity>/*.jpg, or DIR/train/<identity>/*.jpg (imagefolder layout)."
            )
        else:
            try:
                ds = datasets.load_dataset(str(ds), split=split, revision=revision, **load_kwargs)
            except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, bad split...
                raise DataValidationError(
                    f"cannot load the Hugging Face dataset {ds!r}: {err} (a Hub id needs the network or a copy "
                    "in the local cache; a folder must exist)."
                ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataValidationError(f"{description or 'dataset'} has no split {split!r}; splits: {list(ds)}.")
        ds = ds[split]
    return HFFaceDataset(
        ds,
        image_column=image_column,
        label_column=label_column,
        transform=transform,
        degradation=degradation,
        seed=seed,
        check_images=check_images,
        decode_limit=decode_limit,
        min_identities=min_identities,
        description=description,
    )
