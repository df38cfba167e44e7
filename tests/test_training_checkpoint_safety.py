"""Checkpoints hold no pickles and refuse planted ones unread; damaged checkpoints are skipped by `latest`
(with a warning naming them) and refused when named explicitly."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from testing_utils import MainProcess, train_tiny_run

from petal_peft.cli import main as cli_main
from petal_peft.training import CheckpointManager, parse_args, train
from petal_peft.training.checkpoint_format import (
    DamagedCheckpointError,
    UnsafeCheckpointError,
    pickle_like_files,
)

pytestmark = pytest.mark.slow  # trains a run for the module, resumes it


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run of 4 steps with checkpoints at steps 2 and 4, and its final adapter (trained once)."""
    return train_tiny_run(tmp_path_factory.mktemp("run"))


def _copy_run(finished_run, tmp_path: Path) -> tuple[Path, list[str]]:
    root, flags = finished_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    flags = [str(out) if f == str(root / "out") else f for f in flags]
    return out, flags


def _adapter_bytes(out: Path) -> dict[str, bytes]:
    return {n: (out / "adapter" / n).read_bytes() for n in ("adapter_model.safetensors", "head.safetensors")}


def test_checkpoints_hold_no_pickles(finished_run):
    root, _ = finished_run
    checkpoints = sorted((root / "out" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step_2", "step_4"]
    for folder in checkpoints:
        assert pickle_like_files(folder) == [], f"pickle-like files in {folder}"
        names = {p.name for p in folder.iterdir()}
        assert {"checkpoint.json", "run.json", "optimizer.safetensors", "rng_state_0.safetensors"} <= names
        record = json.loads((folder / "run.json").read_text())
        assert {"training_config", "num_processes", "train_data", "base_model"} <= set(record)


class _Planted:
    """Unpickling this creates a marker file: the proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "scheduler.bin", "notes.txt"])
def test_planted_pickle_is_refused_unread(finished_run, tmp_path, name):
    out, flags = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    (out / "checkpoints" / "step_4" / name).write_bytes(pickle.dumps(_Planted(marker), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=name.replace(".", r"\.")):
        train(parse_args(flags + ["--resume_from_checkpoint", "latest"]))
    assert not marker.exists(), "the planted pickle was executed"


def test_latest_skips_a_damaged_checkpoint_and_resumes_the_previous_one(finished_run, tmp_path, capsys):
    out, flags = _copy_run(finished_run, tmp_path)
    reference = _adapter_bytes(out)
    shutil.rmtree(out / "adapter")
    state = out / "checkpoints" / "step_4" / "trainable_state.safetensors"
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    result = train(parse_args(flags + ["--resume_from_checkpoint", "latest"]))
    assert result.resumed_from == str(out / "checkpoints" / "step_2")
    printed = capsys.readouterr().out
    assert "skipping damaged checkpoint" in printed and "step_4" in printed and "trainable_state" in printed
    assert _adapter_bytes(out) == reference  # resumed from step 2: the same run, the same result


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


DAMAGES = {
    "truncated optimizer": lambda d: _truncate(d / "optimizer.safetensors"),
    "missing optimizer": lambda d: (d / "optimizer.safetensors").unlink(),
    "missing rng state": lambda d: (d / "rng_state_0.safetensors").unlink(),
    "truncated progress json": lambda d: _truncate(d / "progress.json"),
    "bad marker json": lambda d: (d / "checkpoint.json").write_text("{step: 4"),
    "missing run record": lambda d: (d / "run.json").unlink(),
    "empty trainable state": lambda d: (d / "trainable_state.safetensors").write_bytes(b""),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damage_is_detected(finished_run, tmp_path, damage):
    out, _ = _copy_run(finished_run, tmp_path)
    DAMAGES[damage](out / "checkpoints" / "step_4")
    manager = CheckpointManager(out / "checkpoints", MainProcess())
    assert manager.resolve("latest").path == out / "checkpoints" / "step_2"
    with pytest.raises(DamagedCheckpointError, match="step_4"):
        manager.resolve(str(out / "checkpoints" / "step_4"))


def test_explicitly_named_damaged_checkpoint_is_one_line_exit_2(finished_run, tmp_path, capsys):
    out, flags = _copy_run(finished_run, tmp_path)
    _truncate(out / "checkpoints" / "step_4" / "optimizer.safetensors")
    code = cli_main(["train", *flags, "--resume_from_checkpoint", str(out / "checkpoints" / "step_4")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "optimizer.safetensors" in err and "damaged" in err and "Traceback" not in err


def test_only_damaged_checkpoints_and_latest_is_a_clear_error(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path)
    for step in ("step_2", "step_4"):
        (out / "checkpoints" / step / "run.json").unlink()
    with pytest.raises(ValueError, match="no usable checkpoint"):
        train(parse_args(flags + ["--resume_from_checkpoint", "latest"]))


def test_checkpoint_records_its_step(finished_run):
    root, _ = finished_run
    assert json.loads((root / "out" / "checkpoints" / "step_2" / "checkpoint.json").read_text())["step"] == 2
