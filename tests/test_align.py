"""Face alignment: the template maths and warps on synthetic landmarks (no dlib), the fallbacks, and (with dlib)
the folder tool and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import FACES, dots_image, needs_dlib, needs_faces, two_person_source

from petal_peft.align import (
    ARCFACE_TEMPLATE_112,
    DLIB5_IN_ARCFACE_112,
    FaceAligner,
    Landmarks,
    landmark_template,
    similarity_transform,
    template_to_template,
    warp_affine,
    warp_to_template,
)
from petal_peft.align.geometry import apply_affine, compose_affine, invert_affine


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    scale, angle = rng.uniform(0.5, 2.5), rng.uniform(-0.6, 0.6)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.concatenate([scale * rot, rng.uniform(-40, 40, (2, 1))], axis=1)


def test_similarity_transform_recovers_a_known_map():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = random_similarity(rng)
        src = rng.uniform(0, 100, (5, 2))
        np.testing.assert_allclose(similarity_transform(src, apply_affine(m, src)), m, atol=1e-9)
    # a mirror image is not a similarity: the best fit keeps the orientation, so it cannot map exactly
    src = rng.uniform(0, 100, (5, 2))
    mirrored = src * [-1, 1]
    fit = similarity_transform(src, mirrored)
    assert np.linalg.det(fit[:, :2]) > 0
    assert np.abs(apply_affine(fit, src) - mirrored).max() > 1


def test_similarity_transform_rejects_bad_landmarks():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same shape"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_affine_helpers_compose_and_invert():
    rng = np.random.default_rng(1)
    a, b = random_similarity(rng), random_similarity(rng)
    p = rng.uniform(0, 50, (7, 2))
    np.testing.assert_allclose(apply_affine(compose_affine(a, b), p), apply_affine(a, apply_affine(b, p)))
    np.testing.assert_allclose(apply_affine(invert_affine(a), apply_affine(a, p)), p, atol=1e-9)


def test_templates():
    arc = landmark_template("arcface", 112)
    np.testing.assert_allclose(arc, DLIB5_IN_ARCFACE_112)
    np.testing.assert_allclose(landmark_template("arcface", 224), 2 * arc)
    np.testing.assert_allclose(landmark_template("arcface", 112, margin=16), arc + 16)
    # dlib's 5 points in the ArcFace crop: eye corners level, face centred, nose between the eyes and the mouth
    assert abs(arc[0, 1] - arc[2, 1]) < 1 and abs(arc[1, 1] - arc[3, 1]) < 1
    assert abs((arc[0, 0] + arc[2, 0]) / 2 - 56) < 1.5
    assert ARCFACE_TEMPLATE_112[0, 1] < arc[4, 1] < ARCFACE_TEMPLATE_112[3, 1]
    # dlib's chip: the unit-square mean face grown by the padding on each side
    chip = landmark_template("dlib", 150, padding=0.25)
    np.testing.assert_allclose(chip[4], (np.array([0.4901123135679, 0.6277975316475]) + 0.25) / 1.5 * 150)
    with pytest.raises(ValueError, match="unknown template"):
        landmark_template("mtcnn")
    with pytest.raises(ValueError, match="margin"):
        landmark_template("arcface", 112, margin=-1)


def disc_centres(img: np.ndarray, guesses: np.ndarray, window: int = 6) -> np.ndarray:
    out = []
    for k, (x, y) in enumerate(guesses):
        c = k % 3
        x0, y0 = int(round(x)) - window, int(round(y)) - window
        patch = img[max(y0, 0) : y0 + 2 * window + 1, max(x0, 0) : x0 + 2 * window + 1, c].astype(np.float64)
        ys, xs = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
        out.append([(xs * patch).sum() / patch.sum() + max(x0, 0), (ys * patch).sum() / patch.sum() + max(y0, 0)])
    return np.array(out)


@pytest.mark.parametrize("scale", [0.7, 1.0, 2.2])
def test_warp_puts_landmarks_on_the_template(scale):
    """A face drawn as five dots at a random pose: after the warp, the dots sit on the template's points."""
    rng = np.random.default_rng(int(scale * 10))
    template = landmark_template("arcface", 112)
    pose = random_similarity(rng)
    pose[:, :2] *= scale / math.sqrt(abs(np.linalg.det(pose[:, :2])))
    pose[:, 2] = [100, 90]  # keep the face inside a 260x240 photo
    points = apply_affine(pose, template - 56)
    photo = dots_image(points, (240, 260), radius=3 * scale)
    aligned, matrix = warp_to_template(photo, points, template, 112)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    np.testing.assert_allclose(apply_affine(matrix, template), points, atol=1e-6)
    np.testing.assert_allclose(disc_centres(aligned, template), template, atol=0.35)


def test_warp_affine_antialiasing_keeps_geometry_and_removes_aliasing():
    """Shrinking 4x: a spot stays where it belongs with or without the box prefilter; fine stripes (period 2 px)
    become flat grey with it, while plain bilinear sampling aliases them into full-contrast bands."""
    img = dots_image(np.array([[101.0, 61.0]]), (200, 200), radius=6)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    m = np.array([[[4.0, 0.0, 1.5], [0.0, 4.0, 1.5]]])  # output pixel -> input pixel
    for antialias in (True, False):
        out = warp_affine(x, m, 50, antialias=antialias)[0].permute(1, 2, 0).numpy()
        centre = disc_centres(out, np.array([[24.9, 14.9]]), window=4)[0]
        np.testing.assert_allclose(centre, [(101 - 1.5) / 4, (61 - 1.5) / 4], atol=0.2)
    stripes = torch.zeros(1, 1, 200, 200)
    stripes[..., ::2] = 1.0
    m = np.array([[[4.1, 0.0, 0.0], [0.0, 4.1, 0.0]]])
    assert warp_affine(stripes, m, 40, antialias=False)[..., 1:-1, 1:-1].std() > 0.2
    smooth = warp_affine(stripes, m, 40, antialias=True)[..., 1:-1, 1:-1]
    assert smooth.std() < 0.05 and abs(smooth.mean().item() - 0.5) < 0.05


def test_warp_affine_rejects_bad_input():
    with pytest.raises(ValueError, match="batch, channels"):
        warp_affine(torch.zeros(3, 8, 8), np.eye(2, 3)[None], 4)
    with pytest.raises(TypeError, match="floating point"):
        warp_affine(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), np.eye(2, 3)[None], 4)
    with pytest.raises(ValueError, match="2 matrices for 1 images"):
        warp_affine(torch.zeros(1, 3, 8, 8), np.stack([np.eye(2, 3)] * 2), 4)


def test_template_to_template_maps_one_alignment_onto_the_other():
    """dlib's chip cut from an ArcFace-aligned canvas equals the chip aligned directly from the photo."""
    rng = np.random.default_rng(3)
    arc = landmark_template("arcface", 112, margin=20)
    chip = landmark_template("dlib", 150)
    pose = random_similarity(rng)
    pose[:, 2] = [120, 120]
    points = apply_affine(pose, arc - 76)
    m_arc = similarity_transform(arc, points)
    m_chip = similarity_transform(chip, points)
    np.testing.assert_allclose(compose_affine(m_arc, template_to_template(arc, chip)), m_chip, atol=1e-9)


class FakeLandmarker:
    """Returns fixed landmarks; ``found`` says whether a detector 'found' the face."""

    def __init__(self, points: np.ndarray, found: bool) -> None:
        self.points, self.found = points, found

    def __call__(self, image) -> Landmarks:
        return Landmarks(self.points, (0, 0, 10, 10), self.found, int(self.found))


@pytest.mark.parametrize(
    "found,fallback,method,shape",
    [
        (True, "skip", "detected", (112, 112, 3)),
        (False, "whole-image", "whole-image", (112, 112, 3)),
        (False, "resize", "resize", (112, 112, 3)),
        (False, "skip", "skip", None),
    ],
)
def test_aligner_fallbacks(found, fallback, method, shape):
    template = landmark_template("arcface", 112)
    photo = dots_image(template + 20, (160, 150))
    aligner = FaceAligner(fallback=fallback, landmarker=FakeLandmarker(template + 20, found))
    face = aligner(Image.fromarray(photo))
    assert face.method == method
    assert (face.image is None) if shape is None else face.image.shape == shape
    if method in ("detected", "whole-image"):
        np.testing.assert_allclose(disc_centres(face.image, template), template, atol=0.35)


def test_aligner_settings_are_checked_before_dlib_loads():
    with pytest.raises(ValueError, match="fallback must be one of"):
        FaceAligner(fallback="centre", landmarker=object())
    with pytest.raises(ValueError, match="size must be at least 8"):
        FaceAligner(size=4, landmarker=object())
    with pytest.raises(ValueError, match=r"\[height, width, 3\]"):
        FaceAligner(landmarker=FakeLandmarker(np.zeros((5, 2)), True))(np.zeros((4, 4, 2), np.uint8))


# ------------------------------------------------------------------------------------------------------------
# With dlib: the folder tool and the CLI
# ------------------------------------------------------------------------------------------------------------


def test_cli_align_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    from petal_peft.cli import main

    assert main(["align", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("petal-peft align: error:") and "nope" in err and "\n" not in err


@needs_dlib
def test_align_folder_keeps_faceless_images_and_reports_them(tmp_path):
    from petal_peft.cli import main

    src = two_person_source(tmp_path)
    (src / "pairs.txt").write_text("Ann/Ann_0001.jpg Bob/Bob_0001.jpg 0\n")
    assert main(["align", str(src), str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "align_report.json").read_text())
    assert report["images"] == 2 and report["detected"] == 0
    assert [r["image"] for r in report["no_face"]] == ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg"]
    assert {r["fallback"] for r in report["no_face"]} == {"whole-image"}
    with Image.open(tmp_path / "out" / "Ann" / "Ann_0001.jpg") as im:
        assert im.size == (112, 112)
    assert (tmp_path / "out" / "pairs.txt").read_text() == (src / "pairs.txt").read_text()
    # a non-empty destination is refused without --overwrite
    assert main(["align", str(src), str(tmp_path / "out"), "--no-progress"]) == 2


@needs_dlib
@needs_faces
def test_real_faces_are_detected_and_land_on_the_template(tmp_path):
    from petal_peft.align import FaceLandmarker

    marker = FaceLandmarker()
    aligner = FaceAligner(landmarker=marker)
    for path in sorted((FACES / "lfw").glob("*/*.jpg"))[:300:100]:
        face = aligner(Image.open(path))
        assert face.method == "detected"
        again = marker(face.image)  # landmarks found again in the aligned crop sit near the template
        assert np.abs(again.points - landmark_template("arcface", 112)).max() < 6


@needs_dlib
def test_image_aligner_refuses_an_image_without_a_face():
    """The inference form (``embed --align``) has no fallback: a guessed crop would pollute an index."""
    from petal_peft.align import image_aligner

    align = image_aligner(64)
    with pytest.raises(ValueError, match="no face found"):
        align(Image.fromarray(dots_image(landmark_template("arcface", 112) + 10, (132, 132))))


@needs_dlib
@needs_faces
def test_image_aligner_returns_the_aligned_crop_of_a_real_face():
    from petal_peft.align import image_aligner

    path = sorted((FACES / "lfw").glob("*/*.jpg"))[0]
    out = image_aligner(96)(Image.open(path))
    assert isinstance(out, Image.Image) and out.size == (96, 96) and out.mode == "RGB"
