"""LFW View-2 pair lists (both layouts), folds as identity groups, and extra sets joined by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from testing_utils import FACES, needs_faces

from petal_peft.data import DataValidationError
from petal_peft.data.lfw import identity_folds, lfw_face_groups, read_lfw_pairs


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _lfw(root: Path, people_per_fold: int = 2, folds: int = 4) -> Path:
    """A tiny LFW: fold f holds people f_0.. with two images each; pairs.txt in LFW's own format."""
    lines = [f"{folds} 1"]
    for f in range(folds):
        a, b = f"P{f}_0", f"P{f}_1"
        for name in (a, b):
            for n in (1, 2):
                _img(root / name / f"{name}_{n:04d}.jpg")
        lines += [f"{a} 1 2", f"{a} 1 {b} 2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_pairs_txt_and_csv_read_the_same(tmp_path):
    root = _lfw(tmp_path / "lfw")
    txt = read_lfw_pairs(root)
    rows = ["fold,label,img1,img2"] + [f"{p.fold},{int(p.same)},{p.first},{p.second}" for p in txt]
    (root / "pairs_view2.csv").write_text("\n".join(rows) + "\n")
    csv_pairs = read_lfw_pairs(root / "pairs_view2.csv")
    assert csv_pairs == txt
    assert [p.same for p in txt[:2]] == [True, False] and txt[1].identities == ("P0_0", "P0_1")


def test_missing_image_and_bad_header_are_named(tmp_path):
    root = _lfw(tmp_path / "lfw")
    os.remove(root / "P1_0" / "P1_0_0002.jpg")
    with pytest.raises(DataValidationError, match="P1_0_0002"):
        read_lfw_pairs(root)
    (root / "pairs.txt").write_text("ten folds\n")
    with pytest.raises(DataValidationError, match="first line"):
        read_lfw_pairs(root)


def test_person_in_two_folds_is_refused(tmp_path):
    root = _lfw(tmp_path / "lfw")
    lines = (root / "pairs.txt").read_text().splitlines()
    lines[-1] = "P3_0 1 P0_0 2"  # fold 3 names a fold-0 person
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match="P0_0"):
        identity_folds(read_lfw_pairs(root))


def test_groups_are_disjoint_and_extra_identities_follow_their_name(tmp_path):
    root = _lfw(tmp_path / "lfw")
    extra = tmp_path / "extra"
    for name in ("P0_0", "P2_1", "Newcomer"):  # fold 0 -> eval (dropped), fold 2 -> adapt, not in LFW -> base
        _img(extra / name / "1.jpg")
    groups = lfw_face_groups(root, [extra], eval_folds=(0,), validation_folds=(1,), adapt_folds=(2,), base_folds=(3,))
    names = [set(g) for g in (groups.base, groups.adapt, groups.validation, groups.eval)]
    assert sum(len(n) for n in names) == len(set().union(*names))
    assert groups.dropped == ["P0_0"] and "Newcomer" in groups.base
    assert len(groups.adapt["P2_1"]) == 3  # two LFW images + the extra one
    assert {p.fold for p in groups.eval_pairs} == {0} and {p.fold for p in groups.validation_pairs} == {1}
    with pytest.raises(ValueError, match="fold 1"):
        lfw_face_groups(root, eval_folds=(0, 1), validation_folds=(1,))


@needs_faces
def test_shared_lfw_folds_are_identity_disjoint():
    pairs = read_lfw_pairs(FACES / "lfw")
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    assert sorted(set(identity_folds(pairs).values())) == list(range(10))
