"""Runs cannot be mixed up: a resume with other flags, data or base model is refused; a fresh run into a folder
holding another run is refused; two runs into one folder at once: the second fails at once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from testing_utils import (
    make_face_folder,
    make_tiny_base,
    start_slowed_training,
    tiny_flags,
    train_tiny_run,
)

from petal_peft.cli import main as cli_main
from petal_peft.training import parse_args, train
from petal_peft.training.run_guard import LOCK_NAME, RESUMABLE_FIELDS, output_dir_lock

pytestmark = pytest.mark.slow  # trains, and launches concurrent training processes


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """4 steps, checkpoints at 2 and 4 (trained once for the module)."""
    return train_tiny_run(tmp_path_factory.mktemp("run"))


def _copy_run(finished_run, tmp_path: Path, *, keep_adapter: bool = False) -> tuple[Path, list[str]]:
    root, flags = finished_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    if not keep_adapter:
        shutil.rmtree(out / "adapter")
    shutil.rmtree(out / "checkpoints" / "step_4")  # so that a resume has steps left to train
    return out, [str(out) if f == str(root / "out") else f for f in flags]


def _set(flags: list[str], **values: object) -> list[str]:
    flags = list(flags)
    for key, value in values.items():
        flag = f"--{key}"
        if flag in flags:
            flags[flags.index(flag) + 1] = str(value)
        else:
            flags += [flag, str(value)]
    return flags


# ---- 1. resume with other flags ------------------------------------------------------------------------------
def test_resume_with_other_run_defining_flags_is_refused_listing_each(finished_run, tmp_path, capsys):
    out, flags = _copy_run(finished_run, tmp_path)
    argv = _set(flags, max_steps=6, per_device_train_batch_size=4, resume_from_checkpoint="latest")
    assert cli_main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--max_steps: 4 in the checkpoint, 6 now" in err
    assert "--per_device_train_batch_size: 8 in the checkpoint, 4 now" in err
    assert "cannot be lengthened on resume" in err  # how to train longer
    assert not (out / "adapter").exists() and not (out / "checkpoints" / "step_4").exists()


def test_resume_may_change_what_does_not_change_the_weights(finished_run, tmp_path):
    root, _ = finished_run
    out, flags = _copy_run(finished_run, tmp_path)
    data = tmp_path / "moved-data"
    shutil.copytree(root / "train", data)  # the same images at a new path
    argv = _set(
        flags,
        resume_from_checkpoint="latest",
        logging_steps=1,
        checkpointing_steps=1,
        checkpoints_total_limit=5,
        dataloader_num_workers=0,
        train_data=data,
    )
    result = train(parse_args(argv))
    assert result.resumed_from == str(out / "checkpoints" / "step_2") and result.global_step == 4
    for name in ("adapter_model.safetensors", "head.safetensors"):
        assert (out / "adapter" / name).read_bytes() == (root / "out" / "adapter" / name).read_bytes()
    assert {"logging_steps", "train_data", "eval_data"} <= RESUMABLE_FIELDS and "max_steps" not in RESUMABLE_FIELDS


def test_resume_with_other_data_is_refused(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path)
    data = make_face_folder(tmp_path / "other", identities=5, per_identity=6)
    with pytest.raises(ValueError, match="training data: 24 images of 4 identities in the checkpoint, 30 of 5 now"):
        train(parse_args(_set(flags, train_data=data, resume_from_checkpoint="latest")))


def test_resume_with_another_base_model_is_refused(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path)
    other = make_tiny_base(tmp_path / "other-base", seed=1)  # same architecture, other weights
    with pytest.raises(ValueError, match="base model: other weights"):
        train(parse_args(_set(flags, base_model=other, resume_from_checkpoint="latest")))


# ---- 2. a fresh run into a folder holding another run -----------------------------------------------------
def test_fresh_run_into_a_used_output_dir_is_refused(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path, keep_adapter=True)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=r"already holds a training run \(checkpoints step_2; adapter/\)"):
        train(parse_args(_set(flags, seed=5)))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_overwrite_output_dir_replaces_the_old_run_but_keeps_user_files(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path, keep_adapter=True)
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "step_12").mkdir()  # an older run's later checkpoint: must not survive
    (out / "checkpoints" / "step_12" / "checkpoint.json").write_text("{}")
    train(parse_args(_set(flags, seed=5, max_steps=2, checkpointing_steps=1, overwrite_output_dir="true")))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1", "step_2"]
    record = json.loads((out / "checkpoints" / "step_2" / "run.json").read_text())
    assert record["training_config"]["seed"] == 5
    assert json.loads((out / "adapter" / "training_config.json").read_text())["seed"] == 5
    assert (out / "notes.txt").read_text() == "mine"


# ---- 3. two runs at once ---------------------------------------------------------------------------------------
def test_second_run_into_a_locked_output_dir_fails_at_once(finished_run, tmp_path):
    out, flags = _copy_run(finished_run, tmp_path)
    with output_dir_lock(out):
        with pytest.raises(ValueError, match="in use by another training run"):
            train(parse_args(_set(flags, resume_from_checkpoint="latest")))
    assert not (out / "adapter").exists()


def test_concurrent_run_fails_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    flags = tiny_flags(base, data, tmp_path / "out", max_steps=40, checkpointing_steps=1)
    first = start_slowed_training(flags, seconds_per_step=0.3)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "out" / "checkpoints" / "step_1" / "checkpoint.json").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the first run never checkpointed"
            time.sleep(0.05)
        code = cli_main(["train", *flags, "--resume_from_checkpoint", "latest"])  # another process's lock
        assert first.poll() is None, "the first run ended before the second was tried: slow it down"
    finally:
        first.kill()  # SIGKILL: the kernel drops its lock
        first.wait()
        first.stderr.close()
    err = capsys.readouterr().err
    assert code == 2 and "in use by another training run" in err and f"process {first.pid}" in err, err
    assert (tmp_path / "out" / LOCK_NAME).exists()  # left behind by the killed run, but not held
    with output_dir_lock(tmp_path / "out"):
        pass  # free again
