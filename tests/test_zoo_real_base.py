"""The real-face base builder's parts on tiny synthetic data: views, loss, distillation, saving and loading.

(The full build needs dlib and the face photos; benchmarks/build_real_base.py runs it.)
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel

from petal_peft.align.geometry import landmark_template
from petal_peft.models.dlib_resnet import DlibFaceResNet
from petal_peft.recipes.real_base import (
    FaceCanvases,
    RealBaseSettings,
    ViewSampler,
    balanced_order,
    build_student,
    distill,
    distillation_loss,
    save_real_face_base,
    student_embed_fn,
    verification_accuracy,
)

MARGIN = 16
NO_AUGMENTATION = dict(
    scale_range=(1.0, 1.0), max_rotation_deg=0.0, max_shift=0.0, flip_prob=0.0, colour_jitter=0.0, grey_prob=0.0,
    mixup_prob=0.0,
)  # fmt: skip


def tiny_settings(**kw) -> RealBaseSettings:
    base = dict(
        architecture="vit", image_size=32, patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_ratio=2,
        embedding_dim=6, steps=3, batch_size=4, warmup_steps=1, eval_every=0, threads=1,
    )  # fmt: skip
    return RealBaseSettings(**{**base, **kw})


def tiny_teacher(seed: int = 0) -> DlibFaceResNet:
    torch.manual_seed(seed)
    return DlibFaceResNet(4, 7, [(4, 4, 1, 1, False), (4, 8, 2, 0, True)], embedding_dim=6).eval()


def spots(points: np.ndarray, size: int, sigma: float = 1.5) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size, 3))
    for k, (x, y) in enumerate(points):
        img[..., k % 3] += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.clip(img, 0, 255).astype(np.uint8)


def centroids(view: torch.Tensor, guesses: np.ndarray, window: int = 5) -> np.ndarray:
    img = view.permute(1, 2, 0).numpy()
    out = []
    for k, (x, y) in enumerate(guesses):
        x0, y0 = int(round(x)) - window, int(round(y)) - window
        patch = img[y0 : y0 + 2 * window + 1, x0 : x0 + 2 * window + 1, k % 3]
        yy, xx = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
        out.append([(xx * patch).sum() / patch.sum() + x0, (yy * patch).sum() / patch.sum() + y0])
    return np.array(out)


def test_each_network_gets_its_own_framing_of_the_same_face():
    """Landmark spots on an aligned canvas land on the ArcFace template in the student's view and on dlib's chip
    template in the teacher's view."""
    points = landmark_template("arcface", 112, margin=MARGIN)
    canvas = FaceCanvases(spots(points, 112 + 2 * MARGIN)[None], MARGIN, ["detected"])
    s = tiny_settings(image_size=112, **NO_AUGMENTATION)
    student, teacher = ViewSampler(s, MARGIN).sample(canvas.tensor([0]), torch.Generator().manual_seed(0))
    assert student.shape == (1, 3, 112, 112) and teacher.shape == (1, 3, 150, 150)
    np.testing.assert_allclose(centroids(student[0], points - MARGIN), landmark_template("arcface", 112), atol=0.3)
    chip = landmark_template("dlib", 150)
    np.testing.assert_allclose(centroids(teacher[0], chip), chip, atol=0.6)


def test_augmentation_moves_both_views_together():
    """A mirrored view: the student's is the exact mirror image of its unaugmented view, and in the teacher's the
    left and right landmark spots swap sides just as much (same augmentation, both framings)."""
    points = landmark_template("arcface", 112, margin=MARGIN)
    canvas = FaceCanvases(spots(points, 112 + 2 * MARGIN)[None], MARGIN, ["detected"]).tensor([0])
    s = tiny_settings(image_size=112, **NO_AUGMENTATION)
    plain_s, plain_t = ViewSampler(s, MARGIN).sample(canvas, torch.Generator().manual_seed(0))
    flipped = replace(s, flip_prob=1.0)
    flip_s, flip_t = ViewSampler(flipped, MARGIN).sample(canvas, torch.Generator().manual_seed(0))
    torch.testing.assert_close(flip_s, torch.flip(plain_s, dims=[-1]), atol=1e-4, rtol=0)
    # in the teacher's chip the mirror axis is x = c for one fixed c: every spot moves to 2c - x
    chip = landmark_template("dlib", 150)
    before = centroids(plain_t[0], chip)
    mirrored_chip = chip.copy()
    mirrored_chip[:, 0] = before[:, 0].mean() * 2 - chip[:, 0]
    after = centroids(flip_t[0], mirrored_chip)
    axes = (before[:, 0] + after[:, 0]) / 2
    assert axes.std() < 0.5 and np.abs(after[:, 1] - before[:, 1]).max() < 0.6


def test_distillation_loss_is_zero_only_for_the_centred_teacher_direction():
    torch.manual_seed(0)
    teacher = torch.randn(8, 6) + 3.0
    mean = teacher.mean(0)
    s = tiny_settings()
    same = distillation_loss(5 * (teacher - mean), teacher, mean, s)
    assert same["loss"].item() < 1e-6
    # the uncentred descriptors point almost the same way; against the centred target they score badly
    assert distillation_loss(teacher, teacher, mean, s)["cosine"].item() > 0.5
    assert distillation_loss(torch.randn(8, 6), teacher, mean, s)["relational"].item() > 0.01


def test_balanced_order_interleaves_same_and_different_pairs():
    pairs = np.array([[i, i + 1, 1] for i in range(4)] + [[i, i + 2, 0] for i in range(4)])
    out = balanced_order(pairs)
    assert out[:, 2].tolist() == [1, 0] * 4 and sorted(map(tuple, out)) == sorted(map(tuple, pairs))


def random_canvases(n: int = 10, seed: int = 0) -> FaceCanvases:
    rng = np.random.default_rng(seed)
    return FaceCanvases(rng.integers(0, 256, (n, 112 + 2 * MARGIN, 112 + 2 * MARGIN, 3), dtype=np.uint8), MARGIN, [])


@pytest.mark.parametrize("architecture", ["vit", "conv_vit"])
def test_distillation_is_deterministic_and_learns(architecture):
    size = 32 if architecture == "vit" else 40
    s = tiny_settings(architecture=architecture, steps=4, stem_units=2, image_size=size, freeze_stem=True)
    canvases, teacher = random_canvases(), tiny_teacher()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        student = build_student(s, teacher)
        log = distill(student, teacher, canvases, s, progress=False)
        runs.append((student.state_dict(), log))
    for key, value in runs[0][0].items():
        torch.testing.assert_close(value, runs[1][0][key], rtol=0, atol=0)
    assert np.isfinite(runs[0][1][-1]["loss"])
    if architecture == "conv_vit":  # the stem is the teacher's, frozen
        stem = build_student(s, teacher).embeddings.stem
        torch.testing.assert_close(stem.units[1].conv1.weight, teacher.units[1].conv1.weight)
        torch.testing.assert_close(runs[0][0]["embeddings.stem.conv.weight"], teacher.stem.weight)


def test_conv_vit_needs_the_teacher():
    with pytest.raises(ValueError, match="pass teacher="):
        build_student(tiny_settings(architecture="conv_vit"))
    with pytest.raises(ValueError, match="architecture must be"):
        build_student(tiny_settings(architecture="swin"))


def fake_record(s: RealBaseSettings) -> dict:
    """The structure model_card() reads (figures here are placeholders for the writer, not measurements)."""
    m = {"accuracy": 50.0, "accuracy_std": 1.0, "auc": 50.0, "num_folds": 10}
    metrics = {k: {**m, "balanced_order": m} for k in ("student", "student_fp16_weights", "teacher_dlib_resnet_torch")}
    groups = {"base": {"identities": 2, "images": 4}}
    timings = {"total_s": 60.0, "align_s": 1.0, "teacher_eval_s": 1.0, "distill_s": 1.0}
    return {"settings": s.to_dict(), "metrics": metrics, "data": {"groups": groups}, "timings": timings}


@pytest.mark.parametrize("architecture", ["vit", "conv_vit"])
def test_saved_base_loads_with_the_auto_classes(tmp_path, architecture):
    s = tiny_settings(architecture=architecture, stem_units=2, image_size=32 if architecture == "vit" else 40)
    torch.manual_seed(0)
    student = build_student(s, tiny_teacher()).eval()
    summary = {"folds": {"base": [6, 7, 8, 9]}, "dropped_extra_identities": [], "base_identities": ["A_B", "C_D"]}
    save_real_face_base(student, s, tmp_path / "base", fake_record(s), summary)
    folder = tmp_path / "base"
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    assert next(model.parameters()).dtype == torch.float32
    images = [np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8) for i in range(2)]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, s.image_size, s.image_size)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ours = student_embed_fn(student.half().float(), s)(x)
        loaded = model(pixel_values=pixels).pooler_output
    torch.testing.assert_close(loaded, ours, atol=2e-2, rtol=2e-2)  # PIL vs torch resize
    assert json.loads((folder / "base_identities.json").read_text())["identities"] == ["A_B", "C_D"]
    card = (folder / "README.md").read_text()
    assert "research use only" in card.lower() and "CC0" in card
    assert (folder / "model.safetensors").stat().st_size < 2 * sum(p.numel() for p in student.parameters()) + 65536


def test_verification_accuracy_on_separable_embeddings():
    e = torch.nn.functional.normalize(torch.eye(4).repeat_interleave(5, 0) + 0.01 * torch.randn(20, 4), dim=1)
    pairs = np.array([[i, i + 1, 1] for i in range(0, 20, 5)] * 3 + [[i, (i + 5) % 20, 0] for i in range(0, 20, 5)] * 3)
    out = verification_accuracy(e, balanced_order(pairs))
    assert out["accuracy"] == 100.0 and out["auc"] == 100.0


def test_an_unfrozen_stem_learns_at_its_own_rate():
    s = tiny_settings(architecture="conv_vit", steps=2, stem_units=2, image_size=40, freeze_stem=False)
    canvases, teacher = random_canvases(), tiny_teacher()
    moved = {}
    for scale in (0.0, 0.1):
        torch.manual_seed(0)
        student = build_student(replace(s, stem_lr_scale=scale), teacher)
        distill(student, teacher, canvases, replace(s, stem_lr_scale=scale), progress=False)
        moved[scale] = (student.embeddings.stem.conv.weight - teacher.stem.weight).abs().max().item()
    assert moved[0.0] == 0.0 and moved[0.1] > 0
