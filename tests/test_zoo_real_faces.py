"""Real-face loading, identity splits and the TinyFace-like folder writer (on small images made here)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from petal_peft.data.real_faces import (
    FaceSample,
    RealFacesUnavailableError,
    group_by_identity,
    load_folder_faces,
    load_olivetti_faces,
    split_identities,
    write_eval_folders,
    write_train_folder,
)


def _samples(n_id: int = 8, per: int = 4, size: int = 12) -> list[FaceSample]:
    rng = np.random.default_rng(0)
    return [
        FaceSample(
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").convert("RGB"), f"p{i:02d}"
        )
        for i in range(n_id)
        for _ in range(per)
    ]


def test_split_is_disjoint_complete_and_deterministic():
    names = [f"id{i}" for i in range(40)]
    a = split_identities(names, seed=3)
    b = split_identities(list(reversed(names)) + names[:5], seed=3)  # order and duplicates do not matter
    assert a == b
    groups = [set(a.pretrain), set(a.adapt), set(a.eval)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert set().union(*groups) == set(names)
    assert (len(a.pretrain), len(a.adapt), len(a.eval)) == (20, 10, 10)
    assert split_identities(names, seed=4) != a


def test_split_rejects_bad_fractions_and_too_few_identities():
    with pytest.raises(ValueError, match="fractions"):
        split_identities(["a", "b", "c"], fractions=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="at least 3"):
        split_identities(["a", "b"])


def test_folder_loader_reads_grey_as_rgb_and_sorted(tmp_path):
    for person in ("s2", "s1"):
        (tmp_path / person).mkdir()
        for n in (2, 1):
            Image.fromarray(np.full((7, 5), 40 * n, np.uint8), mode="L").save(tmp_path / person / f"{n}.pgm")
    (tmp_path / "s1" / "notes.txt").write_text("ignored")
    faces = load_folder_faces(tmp_path)
    assert [f.identity for f in faces] == ["s1", "s1", "s2", "s2"]
    assert all(f.image.mode == "RGB" and f.image.size == (5, 7) for f in faces)
    assert np.asarray(faces[0].image)[0, 0].tolist() == [40, 40, 40]


def test_missing_sets_raise_with_instructions(tmp_path):
    with pytest.raises(RealFacesUnavailableError, match="fetch_olivetti_faces"):
        load_folder_faces(tmp_path / "nope")
    pytest.importorskip("sklearn")
    with pytest.raises(RealFacesUnavailableError, match="pip install scikit-learn"):
        load_olivetti_faces(tmp_path / "empty_sklearn_home")


def test_train_folder_layout(tmp_path):
    samples = _samples()
    root = write_train_folder(samples, tmp_path / "train", identities=["p01", "p03"])
    assert sorted(p.name for p in root.iterdir()) == ["p01", "p03"]
    assert sorted(p.name for p in (root / "p01").iterdir()) == ["0.png", "1.png", "2.png", "3.png"]
    with pytest.raises(FileExistsError):
        write_train_folder(samples, tmp_path / "train")


def test_eval_folders_layout(tmp_path):
    samples = _samples(n_id=8, per=4)
    counts = write_eval_folders(samples, tmp_path / "eval", distractor_fraction=0.25, seed=1)
    pat = re.compile(r"^(p\d\d)_(\d+)\.png$")
    ids = {}
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        files = sorted((tmp_path / "eval" / sub).iterdir())
        assert len(files) == counts[sub]
        assert all(pat.match(f.name) for f in files)
        ids[sub] = {pat.match(f.name).group(1) for f in files}
    assert ids["Probe"] == ids["Gallery_Match"] and len(ids["Probe"]) == 6
    assert not (ids["Gallery_Distractor"] & ids["Probe"]) and len(ids["Gallery_Distractor"]) == 2
    assert counts == {"Probe": 18, "Gallery_Match": 6, "Gallery_Distractor": 8}
    # deterministic: same seed, same files
    write_eval_folders(samples, tmp_path / "eval2", distractor_fraction=0.25, seed=1)
    for sub in counts:
        assert sorted(p.name for p in (tmp_path / "eval" / sub).iterdir()) == sorted(
            p.name for p in (tmp_path / "eval2" / sub).iterdir()
        )


def test_eval_folders_need_two_images_per_probe_identity(tmp_path):
    samples = _samples(n_id=3, per=1)
    with pytest.raises(ValueError, match="needs >= 2"):
        write_eval_folders(samples, tmp_path / "e", distractor_fraction=0.0)
    assert not (tmp_path / "e").exists()


def test_identity_with_underscore_rejected(tmp_path):
    s = [FaceSample(Image.new("RGB", (4, 4)), "a_b")] * 2
    with pytest.raises(ValueError, match="'_'"):
        write_train_folder(s, tmp_path / "t")
    assert group_by_identity(s) == {"a_b": [s[0].image, s[1].image]}
