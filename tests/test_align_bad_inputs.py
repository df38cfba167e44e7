"""align and bad inputs: a decompression bomb is reported per image, an interrupted run never blocks its rerun, and
the output folder is checked before dlib loads."""

from __future__ import annotations

import json

import pytest
from testing_utils import needs_dlib, two_person_source, write_png_header

from petal_peft.cli import main


@needs_dlib
def test_a_decompression_bomb_is_reported_not_a_traceback(tmp_path, capsys):
    src = two_person_source(tmp_path)
    write_png_header(src / "Bob" / "Bob_0002.png", 50000, 50000)
    assert main(["align", str(src), str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "align_report.json").read_text())
    assert report["images"] == 3
    assert [r["image"] for r in report["unreadable"]] == ["Bob/Bob_0002.png"]
    assert "too large" in report["unreadable"][0]["error"]
    assert (tmp_path / "out" / "Ann" / "Ann_0001.jpg").is_file()
    assert "1 unreadable" in capsys.readouterr().out


@needs_dlib
def test_an_interrupted_align_is_rerun_in_place(tmp_path, monkeypatch):
    import petal_peft.align.folder as folder

    src = two_person_source(tmp_path)
    calls = []
    real = folder._align_one

    def crash_on_second(job):
        calls.append(job)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(job)

    monkeypatch.setattr(folder, "_align_one", crash_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        folder.align_folder(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "align_report.json").exists()
    monkeypatch.setattr(folder, "_align_one", real)
    # other settings: the half-written folder is not silently mixed with another run's images
    with pytest.raises(FileExistsError, match="holds an interrupted align .*--overwrite"):
        folder.align_folder(src, tmp_path / "out", size=96, progress=False)
    report = folder.align_folder(src, tmp_path / "out", progress=False)  # same settings: no --overwrite needed
    assert report.images == 2
    assert (tmp_path / "out" / "align_report.json").is_file()
    assert not (tmp_path / "out" / folder.IN_PROGRESS_NAME).exists()
    with pytest.raises(ValueError, match="not empty"):  # a finished run is not redone without --overwrite
        folder.align_folder(src, tmp_path / "out", progress=False)


def test_a_file_in_place_of_the_output_folder_is_refused_before_dlib(tmp_path, capsys, monkeypatch):
    import petal_peft.align.folder as folder

    def no_dlib():
        raise AssertionError("dlib was loaded before the output folder was checked")

    monkeypatch.setattr(folder, "import_dlib", no_dlib)
    (tmp_path / "src").mkdir()
    (tmp_path / "out").write_text("my notes")
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "\n" not in err
    assert (tmp_path / "out").read_text() == "my notes"
