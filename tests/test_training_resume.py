"""Kill -9 after a checkpoint, resume with `latest`: the final adapter and head are bit-identical (CPU)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from testing_utils import (
    make_face_folder,
    make_tiny_base,
    run_script,
    start_slowed_training,
    tiny_flags,
)

pytestmark = pytest.mark.slow  # kills a training process and resumes it


def _flags(base: Path, data: Path, out: Path) -> list[str]:
    # dropout, degradations, flips, gradient accumulation and an AdaFace head (running buffers) all on:
    # everything whose state must survive the kill.
    return tiny_flags(
        base,
        data,
        out,
        max_steps=14,
        checkpointing_steps=2,
        checkpoints_total_limit=2,
        gradient_accumulation_steps=2,
        lora_dropout=0.2,
        degrade_fraction=0.5,
        head="adaface",
    )


def test_sigkill_after_checkpoint_then_resume_latest_is_bit_identical(tmp_path):
    base = make_tiny_base(tmp_path / "base")
    # 40 images: 5 batches of 8 per epoch, 3 optimizer steps (2 + 2 + 1 micro-batches): checkpoints at steps 2
    # and 4 fall mid-epoch, so the resume must skip batches and restore the accumulation counter.
    data = make_face_folder(tmp_path / "train", identities=4, per_identity=10)

    full = run_script(_flags(base, data, tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    killed_out = tmp_path / "killed"
    rng = random.Random(1234)
    wait_for = killed_out / "checkpoints" / f"step_{rng.choice([2, 4])}" / "checkpoint.json"
    proc = start_slowed_training(_flags(base, data, killed_out), seconds_per_step=0.08)
    try:
        deadline = time.monotonic() + 90
        while not wait_for.exists():
            assert proc.poll() is None, f"run ended before {wait_for.parent.name}: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))  # a random step after the checkpoint
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        proc.stderr.close()
    assert not (killed_out / "adapter").exists(), "the run finished before it was killed; slow it down"
    assert any((killed_out / "checkpoints").glob("step_*"))

    resumed = run_script(_flags(base, data, killed_out) + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout
    for name in ("adapter_model.safetensors", "head.safetensors"):
        a = (tmp_path / "full" / "adapter" / name).read_bytes()
        b = (killed_out / "adapter" / name).read_bytes()
        assert a == b, f"{name} differs after kill + resume"
    # and training really moved the adapter (the comparison is not between two untouched inits)
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    assert any(float(t.abs().max()) > 0 for k, t in weights.items() if "lora_B" in k)
