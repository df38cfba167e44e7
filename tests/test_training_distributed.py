"""Two CPU processes (torchrun, gloo) train the same adapter as one process with the same global batch.

Dropout is off here: with dropout, N processes draw different masks than one process over the same images (each
rank draws its own masks for its half of the batch), so the runs would be equally valid but not equal. Every
other random choice (order, degradations, flips) is seeded per image and epoch, so it matches exactly.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import SCRIPT, make_face_folder, make_tiny_base, run_script, tiny_flags, torchrun

pytestmark = pytest.mark.slow  # launches torchrun


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    return torchrun(SCRIPT, argv, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train", identities=4, per_identity=9)  # 36 images: 4 global batches of 8
    common = dict(max_steps=6, lora_dropout=0.0, degrade_fraction=0.5, gradient_accumulation_steps=1)

    one = run_script(tiny_flags(base, data, tmp_path / "one", per_device_train_batch_size=8, **common))
    assert one.returncode == 0, one.stderr[-3000:]

    argv = tiny_flags(base, data, tmp_path / "two", per_device_train_batch_size=4, checkpointing_steps=3, **common)
    two = _torchrun(argv)
    assert two.returncode == 0, two.stderr[-3000:]
    config = (tmp_path / "two" / "adapter" / "training_config.json").read_text()
    assert '"per_device_train_batch_size": 4' in config
    assert "global batch` | `8`" in (tmp_path / "two" / "adapter" / "README.md").read_text()  # 2 processes really ran

    for name in ("adapter_model.safetensors", "head.safetensors"):
        a = load_file(str(tmp_path / "one" / "adapter" / name))
        b = load_file(str(tmp_path / "two" / "adapter" / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=f"{name}:{key}")
    moved = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    assert any(float(t.abs().max()) > 1e-4 for k, t in moved.items() if "lora_B" in k)

    # Each process saved its own random-number state, nothing pickled; resuming the 2-process run from step 3
    # with 2 processes ends where the uninterrupted run ended.
    from petal_peft.training.checkpoint_format import pickle_like_files

    step_3 = tmp_path / "two" / "checkpoints" / "step_3"
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= {p.name for p in step_3.iterdir()}
    assert pickle_like_files(step_3) == []
    shutil.copytree(tmp_path / "two", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "adapter")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_6")
    argv = tiny_flags(base, data, tmp_path / "resumed", per_device_train_batch_size=4, checkpointing_steps=3, **common)
    resumed = _torchrun([*argv, "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and "step 3 of 6" in resumed.stdout
    for name in ("adapter_model.safetensors", "head.safetensors"):
        a = load_file(str(tmp_path / "two" / "adapter" / name))
        b = load_file(str(tmp_path / "resumed" / "adapter" / name))
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=f"resumed {name}:{key}")
