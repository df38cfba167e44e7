"""petal-peft export never deletes what it did not write: foreign folders and files are refused, and --overwrite
replaces only a previous export's own files."""

from __future__ import annotations

import json
import os

import pytest
from tiny_models import randomize_adapters, tiny_model

from petal_peft.export.card import CARD_FORMAT, CARD_NAME
from petal_peft.export.destination import check_export_destination, previous_export_files
from petal_peft.outputs import OutputPathError

PARTS = ["probe_encoder"]


def _photos(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "me.jpg").write_bytes(b"my photo")
    (folder / "trip").mkdir(exist_ok=True)
    (folder / "trip" / "beach.jpg").write_bytes(b"another photo")
    return folder


def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(folder)
        for f in files
    }


def test_foreign_folder_and_file_are_refused(tmp_path):
    photos = _photos(tmp_path / "photos")
    with pytest.raises(OutputPathError, match="not empty and holds no ONNX export .*--overwrite"):
        check_export_destination(photos, PARTS, overwrite=False)
    check_export_destination(photos, PARTS, overwrite=True)  # adds the export, touching nothing else
    (photos / "README.md").write_text("my readme")
    with pytest.raises(OutputPathError, match="files of its own named like the export's \\(README.md\\)"):
        check_export_destination(photos, PARTS, overwrite=True)
    (tmp_path / "file").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="is a file, not a folder"):
            check_export_destination(tmp_path / "file", PARTS, overwrite=overwrite)
    check_export_destination(tmp_path / "new", PARTS, overwrite=False)
    (tmp_path / "empty").mkdir()
    check_export_destination(tmp_path / "empty", PARTS, overwrite=False)


def test_a_previous_export_is_recognised_by_its_card(tmp_path):
    folder = tmp_path / "onnx"
    folder.mkdir()
    card = {"format": CARD_FORMAT, "models": {"gated": {"file": "gated.onnx"}}}
    (folder / CARD_NAME).write_text(json.dumps(card))
    assert previous_export_files(folder) == {CARD_NAME, "README.md", "gated.onnx", "gated.onnx.data"}
    (folder / CARD_NAME).write_text(json.dumps({**card, "files": ["gated.onnx", "../escape", CARD_NAME]}))
    assert previous_export_files(folder) == {"gated.onnx", CARD_NAME}
    with pytest.raises(OutputPathError, match="holds an ONNX export already; pass --overwrite"):
        check_export_destination(folder, PARTS, overwrite=False)
    (folder / CARD_NAME).write_text(json.dumps({"format": "someone-else"}))
    assert previous_export_files(folder) is None


@pytest.fixture
def cli_args(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from peft import get_peft_model

    from petal_peft import QualityGatedLoraConfig

    model = get_peft_model(tiny_model("vit"), QualityGatedLoraConfig(r=2, lora_alpha=2, lora_dropout=0.0))
    randomize_adapters(model)
    model.save_pretrained(tmp_path / "adapter")
    tiny_model("vit").save_pretrained(tmp_path / "base")
    return ["export", "onnx", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"), "--no-check"]


def test_cli_export_refuses_foreign_folders_and_replaces_only_its_own_files(tmp_path, cli_args, capsys, monkeypatch):
    from petal_peft.cli import main

    # the adapter folder itself, a photo folder, the current directory, a file: refused, left as they were
    adapter_before = _snapshot(tmp_path / "adapter")
    assert main([*cli_args, "--out", str(tmp_path / "adapter"), "--parts", *PARTS]) == 2
    assert "holds no ONNX export" in capsys.readouterr().err
    assert main([*cli_args, "--out", str(tmp_path / "adapter"), "--parts", *PARTS, "--overwrite"]) == 2
    assert "README.md" in capsys.readouterr().err  # the adapter's model card has the name of the export's README
    assert _snapshot(tmp_path / "adapter") == adapter_before
    photos = _photos(tmp_path / "photos")
    monkeypatch.chdir(photos)
    assert main([*cli_args, "--out", ".", "--parts", *PARTS]) == 2
    assert _snapshot(photos) == {"me.jpg": b"my photo", "trip/beach.jpg": b"another photo"}
    (tmp_path / "notes").write_text("keep me")
    assert main([*cli_args, "--out", str(tmp_path / "notes"), "--parts", *PARTS, "--overwrite"]) == 2
    assert (tmp_path / "notes").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # --overwrite into the photo folder (here the current directory): the export is added, the photos stay
    assert main([*cli_args, "--out", ".", "--parts", *PARTS, "--overwrite"]) == 0
    after = _snapshot(photos)
    assert after["me.jpg"] == b"my photo" and after["trip/beach.jpg"] == b"another photo"
    assert {"probe_encoder.onnx", CARD_NAME, "README.md"} <= set(after)
    assert not [name for name in os.listdir(photos) if name.startswith(".")]  # no staging left behind

    # an export folder: refused without --overwrite; with it, the old export's files go, the user's stay
    out = tmp_path / "onnx"
    assert main([*cli_args, "--out", str(out), "--parts", "probe_encoder", "gallery_encoder"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main([*cli_args, "--out", str(out), "--parts", *PARTS]) == 2
    assert "holds an ONNX export already" in capsys.readouterr().err
    assert main([*cli_args, "--out", str(out), "--parts", *PARTS, "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["README.md", CARD_NAME, "notes.txt", "probe_encoder.onnx"]
    card = json.loads((out / CARD_NAME).read_text())
    assert card["files"] == ["README.md", CARD_NAME, "probe_encoder.onnx"]
