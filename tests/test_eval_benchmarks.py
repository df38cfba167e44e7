"""Benchmark readers and evaluators on tiny folders made here: layouts, bad input, the safe .bin reader."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from petal_peft.embedding.images import align_face, similarity_transform
from petal_peft.evaluation import (
    EVALUATORS,
    ImageTransform,
    UnsafePickleError,
    load_verification_bin,
    plain_embedder,
)
from petal_peft.evaluation.metrics import IJB_FARS

TRANSFORM = ImageTransform(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class MeanColour(nn.Module):
    """Embedding = mean colour plus a fixed offset: images of one colour get identical embeddings."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.mean(dim=(2, 3)) + torch.tensor([0.0, 0.0, 3.0])


def colour_image(path, rgb, size=20) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size, size), tuple(int(c) for c in rgb)).save(path)


COLOURS = {"1": (255, 0, 0), "2": (0, 255, 0), "3": (0, 0, 255), "4": (255, 255, 0)}


def make_tinyface(root) -> None:
    for ident, rgb in COLOURS.items():
        colour_image(os.path.join(root, "Gallery_Match", f"{ident}_0.jpg"), rgb)
    for ident in ("1", "2", "3"):
        colour_image(os.path.join(root, "Probe", f"{ident}_5.png"), COLOURS[ident])
    colour_image(os.path.join(root, "Probe", "9_1.png"), (128, 128, 128))  # identity 9 has no gallery entry
    # a distractor with the exact colour of identity 3 ties with its match; one far away
    colour_image(os.path.join(root, "Gallery_Distractor", "d_0.png"), COLOURS["3"])
    colour_image(os.path.join(root, "Gallery_Distractor", "d_1.png"), (10, 200, 200))


def test_tinyface_end_to_end_known_answers(tmp_path):
    make_tinyface(tmp_path / "Testing_Set")
    evaluator = EVALUATORS.build("tinyface", data_path=tmp_path, transform=TRANSFORM, ranks=(1, 2, 5))
    metrics = evaluator.run(plain_embedder(MeanColour(), batch_size=2, progress=False))
    # identity 3's match ties with a distractor: pessimistic ties put it at rank 2.
    assert metrics["rank-1"] == pytest.approx(200 / 3)
    assert metrics["rank-2"] == pytest.approx(100.0)
    assert metrics["mAP"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    assert (metrics["num_mated_probes"], metrics["num_unmated_probes"]) == (3, 1)
    assert (metrics["gallery_size"], metrics["num_distractors"]) == (6, 2)
    written = evaluator.plots(tmp_path / "out")
    assert [os.path.basename(p) for p in written] == ["tinyface_cmc.png"]
    assert all(os.path.getsize(p) > 1000 for p in written)


def test_tinyface_wrong_layout_is_a_clear_error(tmp_path):
    colour_image(str(tmp_path / "Probe" / "1_0.jpg"), (1, 2, 3))
    with pytest.raises(FileNotFoundError, match="Gallery_Match"):
        EVALUATORS.build("tinyface", data_path=tmp_path, transform=TRANSFORM)
    colour_image(str(tmp_path / "Gallery_Match" / "noidentity.jpg"), (1, 2, 3))
    with pytest.raises(ValueError, match="cannot read an identity"):
        EVALUATORS.build("tinyface", data_path=tmp_path, transform=TRANSFORM)
    with pytest.raises(FileNotFoundError, match="not found"):
        EVALUATORS.build("tinyface", data_path=tmp_path / "nope", transform=TRANSFORM)


def test_corrupt_image_names_the_file(tmp_path):
    make_tinyface(tmp_path)
    (tmp_path / "Probe" / "1_9.jpg").write_bytes(b"not an image")
    evaluator = EVALUATORS.build("tinyface", data_path=tmp_path, transform=TRANSFORM)
    with pytest.raises(ValueError, match="1_9.jpg"):
        evaluator.run(plain_embedder(MeanColour(), progress=False))


# ------------------------------------------------------------------------------------------------- .bin files
def encoded(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), rgb).save(buf, format="PNG")
    return buf.getvalue()


def make_bin(path, protocol=2, n_pairs=20) -> list[bool]:
    rng = np.random.default_rng(0)
    images, same = [], []
    for i in range(n_pairs):
        a = tuple(int(v) for v in rng.choice([0, 255], 3))
        is_same = i % 2 == 0
        b = a if is_same else tuple(255 - v for v in a)  # impostors: the complementary colour
        images += [encoded(a), encoded(b)]
        same.append(is_same)
    with open(path, "wb") as f:
        pickle.dump((images, same), f, protocol=protocol)
    return same


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_verification_bin_end_to_end(tmp_path, protocol):
    path = tmp_path / "lfw.bin"
    same = make_bin(path, protocol=protocol)
    data = load_verification_bin(path)
    assert data.is_same == same and len(data.images) == 40
    evaluator = EVALUATORS.build("verification", data_path=path, transform=TRANSFORM)
    metrics = evaluator.run(plain_embedder(MeanColour(), batch_size=8, progress=False))
    assert evaluator.dataset_name == "lfw"
    assert metrics["accuracy"] == pytest.approx(100.0)  # same pairs are identical images: distance 0
    assert metrics["auc"] == pytest.approx(100.0)
    assert (metrics["num_pairs"], metrics["num_folds"]) == (20, 10)
    written = evaluator.plots(tmp_path / "out")
    assert sorted(os.path.basename(p) for p in written) == ["lfw_roc.png"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_malicious_bin_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [_Evil()]), protocol=2))
    with pytest.raises(UnsafePickleError, match="refused to load the global"):
        load_verification_bin(path)
    assert not (tmp_path / "pwned.txt").exists()
    with pytest.raises(UnsafePickleError):
        EVALUATORS.build("verification", data_path=path, transform=TRANSFORM)


def test_bin_with_numpy_arrays_is_refused(tmp_path):
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], np.array([True])), protocol=2))
    with pytest.raises(UnsafePickleError, match="numpy"):
        load_verification_bin(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"definitely not a pickle", "not a readable"),
        (pickle.dumps({"images": [], "issame": []}), "expected a pickled"),
        (pickle.dumps(([b"a", b"b", b"c"], [True, False])), "mismatched pair lists"),
        (pickle.dumps(([b"a", b"b"], [2])), "is not a boolean"),
        (pickle.dumps((["a", "b"], [True])), "list of encoded images"),
        (pickle.dumps(([], [])), "no pairs"),
    ],
)
def test_bad_bin_files(tmp_path, payload, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message):
        load_verification_bin(path)


# ------------------------------------------------------------------------------------------------- pair lists
def make_pair_folder(root, lines) -> None:
    colour_image(os.path.join(root, "a", "1.png"), (200, 0, 0))
    colour_image(os.path.join(root, "a", "2.png"), (200, 0, 0))
    colour_image(os.path.join(root, "b", "1.png"), (0, 0, 200))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")


def test_pair_list_end_to_end(tmp_path):
    lines = ["image_a,image_b,label"] + ["a/1.png,a/2.png,1", "a/1.png,b/1.png,0"] * 6
    make_pair_folder(tmp_path, lines)
    evaluator = EVALUATORS.build("verification", data_path=tmp_path, transform=TRANSFORM)
    assert len(evaluator.dataset) == 3  # each image is embedded once
    metrics = evaluator.run(plain_embedder(MeanColour(), progress=False))
    assert metrics["accuracy"] == pytest.approx(100.0) and metrics["num_pairs"] == 12


@pytest.mark.parametrize(
    ("lines", "error", "message"),
    [
        (["a/1.png a/2.png"], ValueError, "expected '<image_a> <image_b> <label>', got 2 fields"),
        (["a/1.png a/2.png 1", "a/1.png b/1.png maybe"], ValueError, "label 'maybe'"),
        (["a/1.png a/9.png 1"] * 12, FileNotFoundError, "do not exist"),
        (["a/1.png a/2.png 1"] * 12, ValueError, "both same-identity and different-identity"),
        (["a/1.png a/2.png 1", "a/1.png b/1.png 0"], ValueError, "too few for 10-fold"),
    ],
)
def test_bad_pair_lists(tmp_path, lines, error, message):
    make_pair_folder(tmp_path, lines)
    with pytest.raises(error, match=message):
        EVALUATORS.build("verification", data_path=tmp_path, transform=TRANSFORM)


def test_verification_folder_without_pair_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="pairs.txt"):
        EVALUATORS.build("verification", data_path=tmp_path, transform=TRANSFORM)


# ----------------------------------------------------------------------------------------------------------- IJB
def make_ijb(root, with_landmarks=True, extra_pair=None) -> None:
    meta = root / "meta"
    meta.mkdir(parents=True)
    # templates 1 and 2: identity red; 3: blue; 4: green. Media 100 holds two images of template 1.
    rows = [
        ("1.jpg", 1, 100),
        ("2.jpg", 1, 100),
        ("3.jpg", 1, 101),
        ("4.jpg", 2, 102),
        ("5.jpg", 3, 103),
        ("6.jpg", 4, 104),
    ]
    colours = {1: (220, 20, 20), 2: (220, 20, 20), 3: (20, 20, 220), 4: (20, 220, 20)}
    lmk = []
    for name, template, _media in rows:
        colour_image(str(root / "loose_crop" / name), colours[template], size=40)
        points = [15, 16, 25, 16, 20, 21, 16, 27, 24, 27]
        lmk.append(" ".join([name, *map(str, points), "0.9"]))
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(f"{n} {t} {m}" for n, t, m in rows) + "\n")
    pairs = ["1 2 1", "1 3 0", "2 4 0", "3 4 0"] + ([extra_pair] if extra_pair else [])
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    if with_landmarks:
        (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk) + "\n")


@pytest.mark.parametrize("with_landmarks", [True, False])
def test_ijb_end_to_end(tmp_path, with_landmarks):
    make_ijb(tmp_path, with_landmarks)
    evaluator = EVALUATORS.build("ijb", data_path=tmp_path, transform=TRANSFORM)
    assert evaluator.dataset_name == "IJBC" and evaluator.use_detector_score == with_landmarks
    metrics = evaluator.run(plain_embedder(MeanColour(), progress=False))
    for far in IJB_FARS:
        assert metrics[f"TAR@FAR={far:.0e}"] == pytest.approx(100.0)
    assert (metrics["num_templates"], metrics["num_pairs"], metrics["num_genuine_pairs"]) == (4, 4, 1)
    written = evaluator.plots(tmp_path / "out")
    assert [os.path.basename(p) for p in written] == ["IJBC_roc.png"]


def test_ijb_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta/"):
        EVALUATORS.build("ijb", data_path=tmp_path, transform=TRANSFORM)
    make_ijb(tmp_path / "x", extra_pair="1 99 1")
    with pytest.raises(ValueError, match="templates absent"):
        EVALUATORS.build("ijb", data_path=tmp_path / "x", transform=TRANSFORM)
    make_ijb(tmp_path / "y")
    os.remove(tmp_path / "y" / "loose_crop" / "3.jpg")
    with pytest.raises(FileNotFoundError, match="images of .* are missing"):
        EVALUATORS.build("ijb", data_path=tmp_path / "y", transform=TRANSFORM)


def test_similarity_alignment_recovers_a_known_transform():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 50, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -2.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m, np.hstack([scale * rot, shift[:, None]]), atol=1e-9)
    # a white dot at the left eye lands at the template's left eye after alignment
    img = Image.new("RGB", (60, 60))
    lmk = np.array([[20, 22], [38, 21], [29, 31], [22, 41], [37, 40]], dtype=float)
    img.putpixel((20, 22), (255, 255, 255))
    out = np.asarray(align_face(img, lmk)).sum(axis=2)
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert abs(x - 38.3) < 2.5 and abs(y - 51.7) < 2.5
