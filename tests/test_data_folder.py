"""Image folders, the TinyFace evaluation split, validation and the build_face_dataset dispatcher."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from petal_peft.data import (
    DataValidationError,
    FaceImageFolder,
    FaceTransform,
    RecordIODataset,
    TinyFaceEvalSplit,
    build_face_dataset,
    check_image_file,
    detect_source_kind,
    validate_face_dataset,
    write_recordio,
)


def _save(path: Path, seed: int, size: int = 64, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def _make_folder(root: Path, identities=("a", "b", "c"), per_id: int = 2, ext: str = "jpg") -> Path:
    for i, name in enumerate(identities):
        for j in range(per_id):
            _save(root / name / f"{j}.{ext}", 10 * i + j)
    return root


def _make_tinyface(root: Path) -> Path:
    for name, seed in [("1_1", 0), ("1_2", 1), ("2_1", 2), ("10_1", 3)]:
        _save(root / "Probe" / f"{name}.jpg", seed)
    for name, seed in [("1_3", 4), ("2_2", 5), ("10_2", 6), ("10_3", 7)]:
        _save(root / "Gallery_Match" / f"{name}.jpg", seed)
    for name, seed in [("d_1", 8), ("5", 9), ("x_7", 10)]:
        _save(root / "Gallery_Distractor" / f"{name}.jpg", seed)
    return root


# ---- FaceImageFolder ---------------------------------------------------------------------------------------------
def test_folder_labels_classes_and_items(tmp_path):
    root = _make_folder(tmp_path / "train", identities=("id10", "id2", "id1"))
    (root / "id1" / "notes.txt").write_text("ignored")
    (root / "id1" / ".hidden.jpg").write_bytes(b"ignored")
    ds = FaceImageFolder(root, transform=FaceTransform(16))
    assert ds.classes == ["id1", "id2", "id10"]  # natural order
    assert ds.num_classes == 3 and len(ds) == 6 and ds.labels == [0, 0, 1, 1, 2, 2]
    item = ds[3]
    assert set(item) == {"pixel_values", "labels"}
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert item["labels"].dtype == torch.long and item["labels"].shape == () and item["labels"].item() == 1
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and batch["labels"].tolist() == [0, 0, 1, 1]
    assert torch.equal(ds[-1]["pixel_values"], ds[5]["pixel_values"])
    with pytest.raises(IndexError):
        ds[6]


def test_folder_structure_errors(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        FaceImageFolder(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DataValidationError, match="not a directory"):
        FaceImageFolder(tmp_path / "file.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match=r"empty.*empty: no identity subfolders"):
        FaceImageFolder(tmp_path / "empty")
    _save(tmp_path / "loose" / "1.jpg", 0)
    with pytest.raises(DataValidationError, match="1 loose images"):
        FaceImageFolder(tmp_path / "loose")
    root = _make_folder(tmp_path / "holes")
    (root / "d").mkdir()
    (root / "d" / "readme.txt").write_text("no images here")
    with pytest.raises(DataValidationError, match=r"1 identity folder\(s\) hold no images.*holes/d"):
        FaceImageFolder(root)
    single = _make_folder(tmp_path / "single", identities=("only",), per_id=3)
    with pytest.raises(DataValidationError, match="has 1 identity; .* at least 2"):
        FaceImageFolder(single)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage, ext, message",
    [
        (lambda p: p.write_bytes(b"not an image at all"), "jpg", "not a readable image"),
        (lambda p: p.write_bytes(b""), "jpg", r"empty file \(0 bytes\)"),
        (_truncate, "jpg", "truncated"),
        (_truncate, "png", "truncated"),
    ],
)
def test_bad_images_fail_at_construction_naming_the_file(tmp_path, damage, ext, message):
    root = _make_folder(tmp_path / "train", ext=ext)
    bad = root / "b" / f"1.{ext}"
    damage(bad)
    with pytest.raises(DataValidationError, match=message) as info:
        FaceImageFolder(root)
    assert str(bad) in str(info.value) and "1 of 6 images" in str(info.value)
    # Skipping the check builds the dataset; reading the bad image still fails with its path.
    ds = FaceImageFolder(root, check_images=False)
    with pytest.raises(DataValidationError, match="b/1"):
        ds[ds.paths.index(bad)]


def test_decode_pass_catches_what_the_header_checks_miss(tmp_path):
    root = _make_folder(tmp_path / "train", ext="jpg", per_id=3)
    bad = root / "c" / "2.jpg"
    # Keep the header and the end-of-image marker but drop the whole scan (entropy-coded data).
    data = bad.read_bytes()
    sos = data.index(b"\xff\xda")
    bad.write_bytes(data[:sos] + b"\xff\xd9")
    assert check_image_file(str(bad), str(bad)) is None  # verify() + EOI marker look fine
    with pytest.raises(DataValidationError, match=r"c/2\.jpg"):
        FaceImageFolder(root, decode_limit=None)
    FaceImageFolder(root, decode_limit=0)  # header pass only: accepted


def test_validate_face_dataset_checks_labels():
    class Fake:
        description = "fake"
        labels = [0, 1, 7]
        num_classes = 3

    with pytest.raises(DataValidationError, match=r"fake: labels must be integers in \[0, 3\), found \[7\]"):
        validate_face_dataset(Fake(), check_images=False)
    Fake.labels = []
    with pytest.raises(DataValidationError, match="fake is empty"):
        validate_face_dataset(Fake(), check_images=False)
    Fake.labels = [0, -100, 1]
    with pytest.raises(DataValidationError, match=r"found \[-100\]"):
        validate_face_dataset(Fake(), check_images=False)
    validate_face_dataset(Fake(), check_images=False, allow_ignore=True)


# ---- TinyFace ----------------------------------------------------------------------------------------------------
def test_tinyface_eval_split(tmp_path):
    root = _make_tinyface(tmp_path / "tinyface" / "Testing_Set")
    for where in (root, tmp_path / "tinyface"):  # the split folder, or the TinyFace root above it
        ds = TinyFaceEvalSplit(where, transform=FaceTransform(16))
        assert ds.classes == ["1", "2", "10"] and ds.num_classes == 3
        assert len(ds) == 11 and ds.probe_indices == [0, 1, 2, 3] and ds.gallery_indices == list(range(4, 11))
        assert ds.probe.labels == [0, 0, 1, 2]  # natural file order: 1_1 1_2 2_1 10_1
        assert ds.gallery.labels == [0, 1, 2, 2, -100, -100, -100]
        assert ds.unmated_identities == []
    item = ds[0]
    assert item["is_probe"].item() is True and ds[5]["is_probe"].item() is False
    assert ds.gallery[4]["labels"].item() == -100
    batch = next(iter(DataLoader(ds.gallery, batch_size=7)))
    assert batch["labels"].tolist() == [0, 1, 2, 2, -100, -100, -100] and not batch["is_probe"].any()


def test_tinyface_errors(tmp_path):
    root = _make_tinyface(tmp_path / "t1")
    for f in (root / "Gallery_Distractor").iterdir():
        f.unlink()
    (root / "Gallery_Distractor").rmdir()
    with pytest.raises(DataValidationError, match=r"lacks folder\(s\) \['Gallery_Distractor'\]"):
        TinyFaceEvalSplit(root)
    assert len(TinyFaceEvalSplit(root, require_distractors=False).gallery) == 4
    root = _make_tinyface(tmp_path / "t2")
    for f in (root / "Probe").iterdir():
        f.unlink()
    with pytest.raises(DataValidationError, match="Probe is empty"):
        TinyFaceEvalSplit(root)
    root = _make_tinyface(tmp_path / "t3")
    _save(root / "Probe" / "nounderscore.jpg", 11)
    with pytest.raises(DataValidationError, match="nounderscore.jpg: file name has no '_'"):
        TinyFaceEvalSplit(root)
    root = _make_tinyface(tmp_path / "t4")
    _truncate(root / "Gallery_Match" / "2_2.jpg")
    with pytest.raises(DataValidationError, match="2_2.jpg: .*truncated"):
        TinyFaceEvalSplit(root)


# ---- build_face_dataset ------------------------------------------------------------------------------------------
def test_build_face_dataset_dispatch(tmp_path):
    folder = _make_folder(tmp_path / "folder")
    tiny_root = tmp_path / "tinyface"
    _make_folder(tiny_root / "Training_Set", identities=("1", "2"))
    _make_tinyface(tiny_root / "Testing_Set")
    paths = sorted(folder.rglob("*.jpg"))
    write_recordio(tmp_path / "rec" / "train", [(p, i // 2) for i, p in enumerate(paths)])

    assert detect_source_kind(folder) == "folder"
    ds = build_face_dataset(str(folder), transform=FaceTransform(16))
    assert isinstance(ds, FaceImageFolder) and ds.num_classes == 3 and ds[0]["pixel_values"].shape == (3, 16, 16)
    ds = build_face_dataset(tiny_root)
    assert isinstance(ds, FaceImageFolder) and ds.root == tiny_root / "Training_Set" and ds.classes == ["1", "2"]
    ds = build_face_dataset(tiny_root / "Testing_Set")
    assert isinstance(ds, TinyFaceEvalSplit) and len(ds.probe) == 4
    for src in (tmp_path / "rec", tmp_path / "rec" / "train", tmp_path / "rec" / "train.rec"):
        assert detect_source_kind(src) == "recordio"
        assert isinstance(build_face_dataset(str(src)), RecordIODataset)
    with pytest.raises(DataValidationError, match="does not exist"):
        build_face_dataset(str(tmp_path / "missing" / "dir"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataValidationError, match="not a .rec/.idx"):
        build_face_dataset(str(tmp_path / "notes.txt"))


def test_cut_jpeg_without_end_marker_is_caught_by_the_tail_check(tmp_path):
    path = _save(tmp_path / "big.jpg", 0, size=96)
    data = path.read_bytes()
    sos = data.index(b"\xff\xda")
    path.write_bytes(data[: sos + (len(data) - sos) // 2])  # cut inside the scan: verify() cannot see this
    assert check_image_file(str(path), str(path)) == "truncated JPEG (no end-of-image marker)"


def test_png_folder_and_in_memory_check(tmp_path):
    root = _make_folder(tmp_path / "png", ext="png")
    ds = FaceImageFolder(root, decode_limit=None)
    assert len(ds) == 6
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    assert check_image_file("mem", buf.getvalue()) is None
    assert "truncated" in check_image_file("mem", buf.getvalue()[:-12])


def test_unlabeled_folder_names_a_missing_root_and_a_file_given_as_root(tmp_path):
    from petal_peft.data.unlabeled import UnlabeledImageFolder

    with pytest.raises(DataValidationError, match="does not exist"):
        UnlabeledImageFolder(tmp_path / "nowhere")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataValidationError, match="is not a directory"):
        UnlabeledImageFolder(tmp_path / "a.png")
