"""Atomic saves: an interrupted checkpoint or adapter save never replaces the previous good one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testing_utils import MainProcess, make_face_folder, make_tiny_base, tiny_flags

from petal_peft.files import old_path, recover_directory
from petal_peft.training import CheckpointManager, atomic_directory, parse_args, publish_directory, train


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_atomic_directory_error_keeps_previous(tmp_path):
    final = tmp_path / "adapter"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-save")
    assert _tree(final) == {"a.txt": b"good"}
    assert os.listdir(tmp_path) == ["adapter"]  # no temporary folder left behind


def test_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    final = tmp_path / "adapter"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("good")
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.txt").write_text("newer")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == new:
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        publish_directory(new, final)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not final.exists() and old_path(final).exists()
    recover_directory(final)
    assert _tree(final) == {"a.txt": b"good"} and not old_path(final).exists()


def test_latest_ignores_partial_and_temporary_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, MainProcess(), total_limit=2)
    for step in (2, 4, 10):
        (tmp_path / f"step_{step}").mkdir()
        (tmp_path / f"step_{step}" / "checkpoint.json").write_text("{}")
    (tmp_path / "step_12").mkdir()  # no marker: not complete
    (tmp_path / ".step_14.tmp").mkdir()
    assert manager.latest() == tmp_path / "step_10"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        manager.resolve(str(tmp_path / "step_12"))
    manager.prune()
    assert [p.name for _, p in manager.complete_checkpoints()] == ["step_4", "step_10"]


def _flags(tmp_path: Path, out: str, **kw) -> list[str]:
    base, data = tmp_path / "base", tmp_path / "train"
    if not base.exists():
        make_tiny_base(base)
        make_face_folder(data)
    return tiny_flags(base, data, tmp_path / out, max_steps=6, checkpointing_steps=2, checkpoints_total_limit=3, **kw)


@pytest.mark.slow
def test_interrupted_adapter_save_keeps_previous_adapter(tmp_path, monkeypatch):
    train(parse_args(_flags(tmp_path, "out")))
    good = _tree(tmp_path / "out" / "adapter")
    assert {"adapter_model.safetensors", "head.safetensors", "README.md", "metrics.json"} <= set(good)

    from petal_peft.heads import FaceHead

    def crash(self, directory):
        (Path(directory) / "head.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while saving the head")

    monkeypatch.setattr(FaceHead, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        train(parse_args(_flags(tmp_path, "out", seed=11, overwrite_output_dir=True)))  # another run, same folder
    assert _tree(tmp_path / "out" / "adapter") == good
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".adapter")]  # no temp left


@pytest.mark.slow
def test_interrupted_checkpoint_is_ignored_and_resume_is_exact(tmp_path, monkeypatch):
    train(parse_args(_flags(tmp_path, "full")))
    reference = _tree(tmp_path / "full" / "adapter")

    from petal_peft.training import checkpointing

    real_save = checkpointing.save_state_file

    def crash_on_step_4(path, *args, **kwargs):
        if ".step_4." in str(path):
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt("killed while checkpointing")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_state_file", crash_on_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(parse_args(_flags(tmp_path, "run")))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "step_2" / "checkpoint.json").is_file()
    assert not (checkpoints / "step_4").exists()
    monkeypatch.setattr(checkpointing, "save_state_file", real_save)

    result = train(parse_args(_flags(tmp_path, "run", resume_from_checkpoint="latest")))
    assert result.resumed_from == str(checkpoints / "step_2")
    resumed = _tree(tmp_path / "run" / "adapter")
    for name in ("adapter_model.safetensors", "head.safetensors"):
        assert resumed[name] == reference[name]
