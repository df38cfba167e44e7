"""train --output_dir: only what a run of ours wrote may be replaced; a folder holding anything else is refused,
with or without --overwrite_output_dir, naming what it found."""

from __future__ import annotations

import importlib.util

import pytest
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags

from petal_peft.training import parse_args, train
from petal_peft.training.run_folder import foreign_entries
from petal_peft.training.run_guard import OutputDirError


def _foreign_folder(out):
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "best.ckpt").write_bytes(b"someone's weights")
    (out / "logs").mkdir()
    (out / "logs" / "app.log").write_text("someone's log\n")
    return out


def test_foreign_entries_names_what_a_run_never_writes(tmp_path):
    run = tmp_path / "run"
    for path in (
        "checkpoints/step_2/checkpoint.json",
        "checkpoints/.step_4.tmp/x",
        "logs/petal-peft/events.out.tfevents.1.host.1.0",
        "logs/petal-peft/1733.5/hparams.yml",
        "adapter/adapter_config.json",
        "adapter/training_config.json",
        ".adapter.old/adapter_config.json",
        ".petal-peft.lock",
        "skipped_images.txt",
    ):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("")
    assert foreign_entries(run) == []
    assert foreign_entries(tmp_path / "missing") == []
    assert foreign_entries(_foreign_folder(tmp_path / "theirs")) == ["checkpoints/best.ckpt", "logs/app.log"]
    (run / "notes.txt").write_text("")  # a user's file next to a run's own: left alone
    assert foreign_entries(run) == []
    (run / "checkpoints" / "best.ckpt").write_text("")
    assert foreign_entries(run) == ["checkpoints/best.ckpt"]
    photos = tmp_path / "photos"  # no sign of a run: someone's folder
    photos.mkdir()
    (photos / "me.jpg").write_text("")
    assert foreign_entries(photos) == ["me.jpg"]
    (photos / "me.jpg").unlink()
    (photos / "adapter").mkdir()
    (photos / "adapter" / "adapter_config.json").write_text("{}")
    assert foreign_entries(photos) == ["adapter/ (not written by petal-peft train)"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_folder_is_refused_and_left_alone(tmp_path, overwrite):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    out = _foreign_folder(tmp_path / "out")
    flags = tiny_flags(base, data, out, max_steps=1) + (["--overwrite_output_dir"] if overwrite else [])
    with pytest.raises(OutputDirError, match=r"never writes \(checkpoints/best\.ckpt, logs/app\.log\)"):
        train(parse_args(flags))
    assert (out / "checkpoints" / "best.ckpt").read_bytes() == b"someone's weights"
    assert (out / "logs" / "app.log").read_text() == "someone's log\n"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "logs"]  # not even a lock file left


def test_cli_names_the_foreign_entry_in_one_line(tmp_path, capsys):
    from petal_peft.cli import main

    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    out = _foreign_folder(tmp_path / "out")
    assert main(["train", *tiny_flags(base, data, out, max_steps=1), "--overwrite_output_dir"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("petal-peft train: error:") and "checkpoints/best.ckpt" in err


@pytest.mark.skipif(not importlib.util.find_spec("tensorboard"), reason="tensorboard not installed")
def test_a_run_folder_holds_only_run_files_and_can_be_overwritten(tmp_path):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    out = tmp_path / "out"
    flags = tiny_flags(base, data, out, max_steps=2, checkpointing_steps=1, report_to="tensorboard")
    train(parse_args(flags))
    assert (out / "logs").is_dir() and (out / "checkpoints" / "step_2").is_dir()
    assert foreign_entries(out) == []
    with pytest.raises(OutputDirError, match="already holds a training run"):
        train(parse_args(flags))
    result = train(parse_args([*flags, "--overwrite_output_dir"]))
    assert result.global_step == 2 and (out / "adapter" / "adapter_config.json").is_file()
