"""Hugging Face datasets: local imagefolder, saved datasets, in-memory datasets, column errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

datasets = pytest.importorskip("datasets")

from petal_peft.data import (  # noqa: E402
    DataValidationError,
    FaceImageFolder,
    FaceTransform,
    HFFaceDataset,
    LowResolutionDegradation,
    build_face_dataset,
    load_hf_face_dataset,
)


def _image(seed: int, size: int = 20) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    root = tmp_path / "faces"
    for i, name in enumerate(["alice", "bob", "carol"]):
        (root / name).mkdir(parents=True)
        for j in range(2):
            _image(10 * i + j).save(root / name / f"{j}.png")
    return root


def test_local_imagefolder(image_folder, tmp_path):
    ds = load_hf_face_dataset(image_folder, transform=FaceTransform(20), cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds, HFFaceDataset)
    assert ds.num_classes == 3 and len(ds) == 6 and ds.classes == ["alice", "bob", "carol"]
    assert sorted(ds.labels) == [0, 0, 1, 1, 2, 2]
    # Same pixels as our own folder reader, image for image.
    folder = FaceImageFolder(image_folder, transform=FaceTransform(20))
    ours = {(folder.labels[i], folder[i]["pixel_values"].sum().item()) for i in range(len(folder))}
    theirs = {(ds.labels[i], ds[i]["pixel_values"].sum().item()) for i in range(len(ds))}
    assert ours == theirs
    item = ds[0]
    assert item["pixel_values"].shape == (3, 20, 20) and item["labels"].dtype == torch.long


def test_missing_columns_are_named(image_folder, tmp_path):
    with pytest.raises(DataValidationError, match=r"missing label column 'identity'; columns are \['image', 'label'\]"):
        load_hf_face_dataset(image_folder, label_column="identity", cache_dir=str(tmp_path / "cache"))
    mem = datasets.Dataset.from_dict({"img": [_image(0), _image(1)], "label": [0, 1]})
    with pytest.raises(DataValidationError, match="missing image column 'image'.*image_column="):
        load_hf_face_dataset(mem)
    assert len(load_hf_face_dataset(mem, image_column="img")) == 2


def test_in_memory_string_labels_and_degradation():
    mem = datasets.Dataset.from_dict(
        {"image": [_image(i) for i in range(4)], "person": ["id10", "id2", "id10", "id2"]}
    ).cast_column("image", datasets.Image())
    ds = load_hf_face_dataset(mem, label_column="person", degradation=LowResolutionDegradation(seed=3))
    assert ds.classes == ["id2", "id10"] and ds.labels == [1, 0, 1, 0] and ds.num_classes == 2
    item = ds[2]
    assert set(item) == {"pixel_values", "labels", "quality_level"} and item["labels"].item() == 1
    assert torch.equal(ds[2]["pixel_values"], item["pixel_values"])


def test_class_label_feature_and_saved_dataset(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c", "d"])})
    mem = datasets.Dataset.from_dict({"image": [_image(i) for i in range(3)], "label": [0, 2, 2]}, features=features)
    ds = load_hf_face_dataset(mem)
    assert ds.num_classes == 4 and ds.classes == ["a", "b", "c", "d"] and ds.labels == [0, 2, 2]
    datasets.DatasetDict({"train": mem}).save_to_disk(str(tmp_path / "saved"))
    loaded = build_face_dataset(str(tmp_path / "saved"))
    assert isinstance(loaded, HFFaceDataset) and loaded.labels == [0, 2, 2]
    with pytest.raises(DataValidationError, match=r"no split 'test'; splits: \['train'\]"):
        load_hf_face_dataset(str(tmp_path / "saved"), split="test")


def test_bad_data_in_hf_datasets(tmp_path):
    one_id = datasets.Dataset.from_dict({"image": [_image(0), _image(1)], "label": [3, 3]})
    with pytest.raises(DataValidationError, match="has 1 identity"):
        load_hf_face_dataset(one_id)
    floats = datasets.Dataset.from_dict({"image": [_image(0), _image(1)], "label": [0.5, 1.0]})
    with pytest.raises(DataValidationError, match="non-integer"):
        load_hf_face_dataset(floats)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    _image(0).save(tmp_path / "good.png")
    paths = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "good.png"), str(tmp_path / "bad.png")], "label": [0, 1]}
    ).cast_column("image", datasets.Image())
    with pytest.raises(DataValidationError, match=r"bad\.png.*not a readable image"):
        load_hf_face_dataset(paths)
    with pytest.raises(DataValidationError, match="does not exist"):
        load_hf_face_dataset(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_hf_face_dataset("some/dataset", trust_remote_code=True)
    with pytest.raises(DataValidationError, match="streaming"):
        load_hf_face_dataset(one_id.to_iterable_dataset())
