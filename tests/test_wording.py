"""The default output folder is git-ignored; user-facing text points nowhere that does not exist (no
package-index install, no internal notes, no test file by a wrong name)."""

from __future__ import annotations

import re
from pathlib import Path

from petal_peft.training import FaceAdapterTrainingConfig

REPO = Path(__file__).resolve().parents[1]


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
