"""The shared test helpers build inputs that the package loads: a saved tiny base and both folder layouts."""

from __future__ import annotations

from testing_utils import make_eval_folder, make_face_folder, make_tiny_base


def test_helpers_build_loadable_inputs(tmp_path):
    from petal_peft.data import FaceImageFolder, TinyFaceEvalSplit

    make_tiny_base(tmp_path / "base")
    assert (tmp_path / "base" / "config.json").is_file()
    folder = FaceImageFolder(make_face_folder(tmp_path / "train"))
    assert folder.num_classes == 4 and len(folder) == 24
    split = TinyFaceEvalSplit(make_eval_folder(tmp_path / "eval"))
    assert len(split.probe_indices) == 6
