"""Saves honour the umask: what petal_peft/files.py publishes, and the writers built on it, get the modes a plain
``open()`` / ``mkdir()`` would have given (files ``0o666 & ~umask``, folders ``0o777 & ~umask``), not the
owner-only modes of temporary files, temporary folders and safetensors files.

This is the one place the umask is tested: every saver in the package goes through these functions.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from peft import get_peft_model
from safetensors.torch import save_file
from testing_utils import tiny_vit

import petal_peft
from petal_peft import QualityGatedLoraConfig
from petal_peft.files import atomic_directory, current_umask, write_file_atomic, write_json_atomic
from petal_peft.heads import build_head


@pytest.fixture(params=[0o022, 0o077, 0o007], ids=oct)
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _assert_modes(root: Path, mask: int) -> None:
    for path in [root, *root.rglob("*")]:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == expected, f"{path}: {oct(mode)}, expected {oct(expected)} under umask {oct(mask)}"


def test_current_umask_reads_the_process_umask(mask):
    assert current_umask() == mask
    assert current_umask() == mask  # reading it left it as it was


def test_files_and_folders_published_atomically_follow_the_umask(tmp_path, mask):
    import torch

    write_json_atomic(tmp_path / "out" / "report.json", {"a": 1})
    write_file_atomic(tmp_path / "out" / "text.txt", lambda tmp: Path(tmp).write_text("x"))
    with atomic_directory(tmp_path / "out" / "folder") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))  # safetensors writes owner-only
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("a")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left behind
    for name in ("report.json", "text.txt", "folder"):
        _assert_modes(tmp_path / "out" / name, mask)


def test_adapter_head_and_proxy_savers_follow_the_umask(tmp_path, mask):
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=2, lora_alpha=2))
    model.save_pretrained(tmp_path / "adapter")
    build_head("cosface", embedding_size=32, num_classes=3).save_pretrained(tmp_path / "head")
    petal_peft.export_proxy_encoders(model, tmp_path / "encoders")
    for folder in ("adapter", "head", "encoders"):
        _assert_modes(tmp_path / folder, mask)


def test_to_jsonable_makes_strict_json_of_numpy_and_torch_values():
    import json

    import numpy as np
    import torch

    from petal_peft.files import to_jsonable

    value = {1: np.arange(3), "t": torch.tensor([1.5, float("inf")]), "s": np.float64("nan"), "p": (np.int64(2),)}
    assert json.loads(json.dumps(to_jsonable(value), allow_nan=False)) == {
        "1": [0, 1, 2],
        "t": [1.5, None],
        "s": None,
        "p": [2],
    }
