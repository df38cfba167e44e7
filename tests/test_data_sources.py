"""Training-data arguments: the imagefolder split layout, hf:// arguments, and --skip_corrupt_images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags

from petal_peft.cli import main as cli_main
from petal_peft.data import DataValidationError, FaceImageFolder, build_face_dataset
from petal_peft.training import parse_args, train


def _split_layout(root: Path) -> Path:
    """``root/train/<label>/*.png`` and ``root/test/<label>/*.png`` (Hugging Face imagefolder with splits)."""
    make_face_folder(root / "train", identities=3, per_identity=4)
    make_face_folder(root / "test", identities=2, per_identity=2)
    return root


def test_imagefolder_split_layout_reads_the_train_split(tmp_path):
    ds = build_face_dataset(_split_layout(tmp_path / "data"))
    assert isinstance(ds, FaceImageFolder)
    assert ds.root == tmp_path / "data" / "train"
    assert ds.classes == ["id0", "id1", "id2"] and len(ds) == 12


def test_split_layout_without_a_train_split_says_what_to_pass(tmp_path):
    make_face_folder(tmp_path / "data" / "test", identities=2, per_identity=2)
    with pytest.raises(DataValidationError, match=r"no 'train' split; pass the split folder itself"):
        build_face_dataset(tmp_path / "data")


def test_hf_scheme_on_a_local_folder_and_hub_errors(tmp_path, monkeypatch):
    ds = build_face_dataset(f"hf://{_split_layout(tmp_path / 'data')}", cache_dir=str(tmp_path / "cache"))
    assert ds.num_classes == 3 and len(ds) == 12
    monkeypatch.chdir(tmp_path)  # hf://imagefolder used to read whatever the current folder held
    with pytest.raises(DataValidationError, match="generic loader of the datasets library, not a dataset"):
        build_face_dataset("hf://imagefolder")
    with pytest.raises(DataValidationError, match="give a dataset after hf://"):
        build_face_dataset("hf://")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataValidationError, match="cannot load the Hugging Face dataset 'nobody/no-such-faces'"):
        build_face_dataset("hf://nobody/no-such-faces")


def test_cli_hf_imagefolder_is_one_line(tmp_path, capsys):
    base = make_tiny_base(tmp_path / "base")
    code = cli_main(["train", *tiny_flags(base, "hf://imagefolder", tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "not a dataset" in err


# ---- 15. --skip_corrupt_images ------------------------------------------------------------------------------
def _corrupt(data: Path) -> list[Path]:
    bad = [data / "id1" / "2.png", data / "id3" / "0.png"]
    bad[0].write_bytes(b"not an image at all")
    bad[1].write_bytes(bad[1].read_bytes()[:40])  # truncated
    return bad


def test_corrupt_images_fail_fast_by_default(tmp_path):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    _corrupt(data)
    with pytest.raises(DataValidationError, match=r"2 of 24 images .* are unusable"):
        train(parse_args(tiny_flags(base, data, tmp_path / "out", max_steps=1)))


def test_skip_corrupt_images_trains_and_lists_what_was_skipped(tmp_path, capsys):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    bad = _corrupt(data)
    flags = tiny_flags(base, data, tmp_path / "out", max_steps=2, checkpointing_steps=2, skip_corrupt_images=True)
    result = train(parse_args(flags))
    assert result.global_step == 2
    assert "Skipped 2 unreadable training image(s)" in capsys.readouterr().out
    listed = (tmp_path / "out" / "skipped_images.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in listed] == [str(p) for p in bad]
    record = json.loads((tmp_path / "out" / "checkpoints" / "step_2" / "run.json").read_text())
    assert record["train_data"]["num_images"] == 22


def test_skip_corrupt_images_still_needs_two_identities(tmp_path):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train", identities=2)
    for path in (data / "id1").iterdir():
        path.write_bytes(b"x")
    with pytest.raises(DataValidationError, match="identit"):
        train(parse_args(tiny_flags(base, data, tmp_path / "out", max_steps=1, skip_corrupt_images=True)))
    assert not (tmp_path / "out" / "adapter").exists()


def test_skip_corrupt_images_skips_a_decompression_bomb(tmp_path, capsys):
    from test_images import write_png_header

    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    bomb = write_png_header(data / "id2" / "bomb.png", 50000, 50000)
    with pytest.raises(DataValidationError, match=r"bomb\.png: image too large"):
        train(parse_args(tiny_flags(base, data, tmp_path / "out", max_steps=1)))
    result = train(parse_args(tiny_flags(base, data, tmp_path / "out2", max_steps=1, skip_corrupt_images=True)))
    assert result.global_step == 1
    listed = (tmp_path / "out2" / "skipped_images.txt").read_text()
    assert str(bomb) in listed and "too large" in listed
