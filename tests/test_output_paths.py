"""One rule for output paths, checked before any model is loaded: a file where a folder is wanted, a read-only
place and an existing output without --overwrite are one line with exit 2; and embed's --skip-corrupt-images."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from testing_utils import cli

import petal_peft.outputs
from petal_peft.cli import main
from petal_peft.inference import EmbeddingIndex
from petal_peft.outputs import OutputPathError, check_output_file, check_output_folder


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the output path was checked")


@pytest.fixture
def no_model_loading(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", _no_model)
    monkeypatch.setattr("petal_peft.inference.encoders.load_base_model", _no_model)


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


def test_the_rule(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputPathError, match="file, not a folder"):
        check_output_folder(tmp_path / "file" / "sub", overwrite=True)
    with pytest.raises(OutputPathError, match="not empty; pass --overwrite"):
        check_output_folder(tmp_path / "full", overwrite=False)
    check_output_folder(tmp_path / "full", overwrite=True)
    check_output_folder(tmp_path / "new" / "deeper", overwrite=False)
    with pytest.raises(OutputPathError, match="is a folder, not a file"):
        check_output_file(tmp_path / "full", overwrite=True)
    with pytest.raises(OutputPathError, match="already exists; pass --overwrite"):
        check_output_file(tmp_path / "file", overwrite=False)
    check_output_file(tmp_path / "file", overwrite=True)
    real_access = os.access
    monkeypatch.setattr(petal_peft.outputs.os, "access", lambda p, m: False if "full" in str(p) else real_access(p, m))
    with pytest.raises(OutputPathError, match="not writable"):
        check_output_folder(tmp_path / "full" / "new", overwrite=False)


def test_eval_out_is_checked_before_the_model_loads(ws, tmp_path, capsys, no_model_loading):  # noqa: F811
    (tmp_path / "report").write_text("not a folder")
    args = ["eval", "--model", str(ws / "base"), "--benchmark", "tinyface", "--data", str(ws), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "report")]) == 2
    assert "is a file, not a folder" in _last_error(capsys)


def test_existing_outputs_are_refused_without_overwrite(ws, gate_index, tmp_path, capsys, no_model_loading):  # noqa: F811
    gallery = ws / "gallery_gate.safetensors"
    (tmp_path / "results.json").write_text("{}")
    search = ["search", "--gallery", gallery, "--probes", gallery, "--out", tmp_path / "results.json"]
    assert cli(*search) == 2
    assert "results.json already exists; pass --overwrite" in _last_error(capsys)
    assert (tmp_path / "results.json").read_text() == "{}"
    assert cli(*search, "--overwrite") == 0
    assert json.loads((tmp_path / "results.json").read_text())["num_probes"] == len(gate_index)
    verify = ["verify", "--embeddings", gallery, "--threshold", "1.0", "--out", tmp_path / "results.json"]
    assert cli(*verify, "ada/0.png", "bob/0.png") == 2
    assert "already exists; pass --overwrite" in _last_error(capsys)
    assert cli(*verify, "ada/0.png", "bob/0.png", "--overwrite") == 0
    # embed: an existing index is refused before the model loads (no_model_loading would fail otherwise)
    embed = ["embed", "--model", ws / "base", "--images", ws / "gallery", "--out", gallery]
    assert cli(*embed) == 2
    assert "already exists; pass --overwrite" in _last_error(capsys)


def test_read_only_places_are_one_line_before_the_work(ws, tmp_path, capsys, monkeypatch, no_model_loading):  # noqa: F811
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(petal_peft.outputs.os, "access", lambda p, m: False if p == locked else real_access(p, m))
    gallery = ws / "gallery_gate.safetensors"
    commands = [
        ["search", "--gallery", gallery, "--probes", gallery, "--out", locked / "r.json"],
        ["verify", "--embeddings", gallery, "--threshold", "1", "--out", locked / "v.json", "ada/0.png", "bob/0.png"],
        ["embed", "--model", ws / "base", "--images", ws / "gallery", "--out", locked / "g"],
        ["eval", "--model", ws / "base", "--benchmark", "tinyface", "--data", ws, "--out", locked / "eval"],
        ["export", "proxy", "--model", ws / "base", "--adapter", ws / "adapter", "--out", locked / "proxy"],
    ]
    for command in commands:
        assert cli(*command) == 2, command[0]
        line = _last_error(capsys)
        assert line.startswith(f"petal-peft {command[0]}: error:") and "not writable" in line, line
    assert list(locked.iterdir()) == []


def _bad_gallery(workspace, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(workspace / "gallery", gallery)
    (gallery / "bob" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (gallery / "cy" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    return gallery


def test_embed_skip_corrupt_images_lists_what_it_skipped(ws, gate_index, tmp_path, capsys):  # noqa: F811
    gallery = _bad_gallery(ws, tmp_path)
    out = tmp_path / "g.safetensors"
    args = ["embed", "--model", ws / "base", "--adapter", ws / "adapter", "--images", gallery, "--out", out]
    assert cli(*args, "--chunk-size", 4, "--skip-corrupt-images") == 0
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
    index = EmbeddingIndex.load(out)
    assert index.files == gate_index.files
    np.testing.assert_allclose(index.embeddings.numpy(), gate_index.embeddings.numpy(), atol=1e-6)
    document = json.loads((tmp_path / "g.json").read_text())
    assert document["num_skipped"] == 2
    skipped = {entry["image"]: entry["problem"] for entry in document["skipped_images"]}
    assert set(skipped) == {"bob/broken.png", "cy/gone.jpg"}
    assert "broken symbolic link" in skipped["cy/gone.jpg"]


def test_embed_without_skip_fails_naming_the_image_and_the_rerun_is_not_blocked(ws, gate_index, tmp_path, capsys):  # noqa: F811
    gallery = _bad_gallery(ws, tmp_path)
    out = tmp_path / "g.safetensors"
    args = ["embed", "--model", ws / "base", "--adapter", ws / "adapter", "--images", gallery, "--out", out]
    assert cli(*args, "--chunk-size", 4) == 2
    line = _last_error(capsys)
    assert "broken.png" in line or "gone.jpg" in line
    (gallery / "bob" / "broken.png").unlink()
    (gallery / "cy" / "gone.jpg").unlink()
    assert cli(*args, "--chunk-size", 4) == 0  # same settings: the finished chunks are kept, the rest redone
    assert EmbeddingIndex.load(out).files == gate_index.files
    assert not (tmp_path / "g.safetensors.parts").exists()


def test_search_skips_unreadable_probe_images(ws, gate_index, tmp_path, capsys):  # noqa: F811
    probes = tmp_path / "probes"
    shutil.copytree(ws / "probes", probes)
    Image.new("RGB", (4, 4)).save(probes / "ada" / "ok.png")
    (probes / "ada" / "bad.jpg").write_bytes(b"nope")
    args = ["search", "--gallery", ws / "gallery_gate.safetensors", "--images", probes, "--model", ws / "base"]
    args += ["--adapter", ws / "adapter", "--out", tmp_path / "r.json", "--skip-corrupt-images"]
    assert cli(*args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_probes"] == 5
    assert [e["image"] for e in result["probes"]["skipped_images"]] == ["ada/bad.jpg"]
