"""Saved files honour the umask; the default output folder is git-ignored; user-facing text points nowhere that
does not exist (no package-index install, no internal notes, no test file by a wrong name)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from peft import get_peft_model
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags
from tiny_models import tiny_vit

import petal_peft
from petal_peft import QualityGatedLoraConfig
from petal_peft.evaluation.report import write_json_atomic
from petal_peft.heads import build_head
from petal_peft.training import FaceAdapterTrainingConfig, parse_args, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    def set_mask(mask: int) -> int:
        os.umask(mask)
        return mask

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in paths if not p.is_symlink()}


def _assert_modes(root: Path, mask: int) -> None:
    for name, mode in _modes(root).items():
        expected = (0o777 if (root.parent / name).is_dir() else 0o666) & ~mask
        assert mode == expected, f"{name}: {oct(mode)}, expected {oct(expected)} under umask {oct(mask)}"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_adapter_head_proxy_and_report_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=2, lora_alpha=2))
    model.save_pretrained(tmp_path / "adapter")
    build_head("cosface", embedding_size=32, num_classes=3).save_pretrained(tmp_path / "head")
    petal_peft.export_proxy_encoders(model, tmp_path / "encoders")
    write_json_atomic(tmp_path / "report" / "r.json", {"a": 1})
    for folder in ("adapter", "head", "encoders", "report"):
        _assert_modes(tmp_path / folder, mask)


def test_training_outputs_follow_the_umask(tmp_path, umask):
    base, data = make_tiny_base(tmp_path / "base"), make_face_folder(tmp_path / "train")
    train(parse_args(tiny_flags(base, data, tmp_path / "out", max_steps=2, checkpointing_steps=2)))
    _assert_modes(tmp_path / "out" / "adapter", 0o022)
    _assert_modes(tmp_path / "out" / "checkpoints", 0o022)


def test_default_output_dir_is_git_ignored():
    default = FaceAdapterTrainingConfig().output_dir
    patterns = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()]
    assert f"{default}/" in patterns or default in patterns


def _user_facing_text() -> dict[Path, str]:
    files = [*REPO.joinpath("petal_peft").rglob("*.py"), *REPO.joinpath("docs").rglob("*.md"), REPO / "README.md"]
    files += [*REPO.joinpath("examples").rglob("*.py")]
    return {p: p.read_text(encoding="utf-8") for p in files}


def test_no_package_index_install_and_no_internal_notes():
    for path, text in _user_facing_text().items():
        assert not re.search(r"pip install (-U )?['\"]?petal-peft", text), f"{path}: petal-peft is not on PyPI"
        assert "pypi.org/project/petal-peft" not in text, path
        assert "DESIGN.md" not in text and "§" not in text, f"{path} cites internal notes users do not have"


def test_test_files_named_in_the_package_exist():
    for path, text in _user_facing_text().items():
        for name in re.findall(r"tests/(test_\w+\.py)", text):
            assert (REPO / "tests" / name).is_file(), f"{path} names tests/{name}, which does not exist"
