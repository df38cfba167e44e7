"""Training objectives: margin, label-free distillation, both; the teacher cache; the imprinted head."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from testing_utils import (
    identity_image,
    make_face_folder,
    make_tiny_base,
    subprocess_env,
    tiny_flags,
)

from petal_peft.data import DataValidationError
from petal_peft.training import teacher_cache
from petal_peft.training.config import parse_args
from petal_peft.training.objectives import ObjectiveLoss, distillation_loss


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectives")
    return make_tiny_base(root / "base"), make_face_folder(root / "train", identities=4, per_identity=6)


def _config(inputs, out, **overrides):
    base, data = inputs
    flags = dict(max_steps=12, learning_rate=5e-3, eval_steps=0, logging_steps=1)
    flags.update(overrides)
    return parse_args(tiny_flags(base, data, out, **flags))


def _recorded_losses(monkeypatch):
    losses: list[float] = []
    call = ObjectiveLoss.__call__

    def recording(self, model, batch, quality):
        loss = call(self, model, batch, quality)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(ObjectiveLoss, "__call__", recording)
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["margin", "distill", "margin+distill"])
def test_each_objective_trains_and_its_loss_decreases(inputs, tmp_path, monkeypatch, objective):
    from petal_peft.training import train

    losses = _recorded_losses(monkeypatch)
    result = train(_config(inputs, tmp_path / "out", objective=objective, distill_weight=5.0))
    assert result.global_step == 12 and len(losses) == 12
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, f"{objective}: loss {first:.4f} -> {last:.4f}"
    saved = {p.name for p in (tmp_path / "out" / "adapter").iterdir()}
    assert "adapter_model.safetensors" in saved
    assert ("head.safetensors" in saved) == (objective != "distill")  # distill trains no head
    card = (tmp_path / "out" / "adapter" / "README.md").read_text()
    assert objective in card


@pytest.mark.slow
def test_teacher_targets_are_computed_once_and_then_read_from_the_cache(inputs, tmp_path, monkeypatch):
    from petal_peft.training import train

    calls = []
    compute = teacher_cache.compute_teacher_targets

    def counting(model, dataset, **kwargs):
        calls.append(len(dataset))
        return compute(model, dataset, **kwargs)

    monkeypatch.setattr(teacher_cache, "compute_teacher_targets", counting)
    cache = tmp_path / "targets.safetensors"
    # 24 images, batch 8: 3 batches an epoch, 9 steps = 3 epochs, one teacher pass before the first
    train(_config(inputs, tmp_path / "a", objective="distill", max_steps=9, teacher_cache=str(cache)))
    assert calls == [24] and cache.is_file()
    train(_config(inputs, tmp_path / "b", objective="distill", max_steps=9, seed=4, teacher_cache=str(cache)))
    assert calls == [24]  # another seed on the same base and data: read back, the teacher never runs
    # the targets are the untouched base's embeddings of the sharp image and its mirror
    from safetensors.torch import load_file
    from transformers import ViTModel

    from petal_peft.data import FaceImageFolder, FaceTransform
    from petal_peft.embedding.extractor import pooled_embedding

    targets = load_file(str(cache))["targets"]
    base = ViTModel.from_pretrained(str(inputs[0])).eval()
    folder = FaceImageFolder(inputs[1], transform=FaceTransform(32, horizontal_flip=True))
    x = torch.stack([teacher_cache.sharp_view(folder, i) for i in (0, 5)])
    with torch.no_grad():
        want = pooled_embedding(base(pixel_values=torch.cat([x, x.flip(-1)])))
    assert torch.allclose(targets[[0, 5], 0], want[:2], atol=1e-5)
    assert torch.allclose(targets[[0, 5], 1], want[2:], atol=1e-5)
    # another base: the fingerprint differs, the targets are computed afresh
    make_tiny_base(tmp_path / "other", seed=9)
    train(
        _config(
            (tmp_path / "other", inputs[1]), tmp_path / "c", objective="distill", max_steps=3, teacher_cache=str(cache)
        )
    )
    assert calls == [24, 24]


def test_the_flip_a_batch_reports_is_the_flip_it_applied(inputs):
    from petal_peft.data import FaceImageFolder, FaceTransform

    folder = FaceImageFolder(inputs[1], transform=FaceTransform(32, horizontal_flip=True), seed=5)
    indexed = teacher_cache.IndexedFaces(folder)
    flips = set()
    for epoch in (0, 1):
        indexed.set_epoch(epoch)
        for i in range(len(indexed)):
            item = indexed[i]
            sharp = teacher_cache.sharp_view(folder, i)
            expected = sharp.flip(-1) if bool(item["flipped"]) else sharp
            assert torch.equal(item["pixel_values"], expected) and int(item["index"]) == i
            flips.add(bool(item["flipped"]))
    assert flips == {True, False}


@pytest.mark.slow
def test_label_free_folder_trains_with_distill_and_margin_is_refused(inputs, tmp_path):
    from petal_peft.training import train

    plain = tmp_path / "plain"
    plain.mkdir()
    for n in range(16):
        identity_image(n % 4, n).save(plain / f"{n}.png")
    base = inputs[0]
    result = train(parse_args(tiny_flags(base, plain, tmp_path / "d", objective="distill", max_steps=2)))
    assert result.global_step == 2
    for objective in ("margin", "margin+distill"):
        with pytest.raises(DataValidationError, match=re.escape(f"--objective {objective} needs identity labels")):
            train(parse_args(tiny_flags(base, plain, tmp_path / "m", objective=objective, max_steps=2)))
    cli = subprocess.run(
        [sys.executable, "-m", "petal_peft.cli", "train", *tiny_flags(base, plain, tmp_path / "m", max_steps=2)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert cli.returncode == 2
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--objective margin needs identity labels" in lines[0], cli.stderr


def test_dataset_without_a_label_column_trains_with_distill(inputs, tmp_path):
    datasets = pytest.importorskip("datasets")
    from petal_peft.training import train

    images = [identity_image(n % 3, n) for n in range(12)]
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(
        str(tmp_path / "ds")
    )
    result = train(parse_args(tiny_flags(inputs[0], tmp_path / "ds", tmp_path / "o", objective="distill", max_steps=2)))
    assert result.global_step == 2
    with pytest.raises(DataValidationError, match="--objective margin needs identity labels.*'label' column"):
        train(parse_args(tiny_flags(inputs[0], tmp_path / "ds", tmp_path / "o2", max_steps=2)))


def test_imprinted_head_rows_are_the_normalised_class_prototypes(inputs, tmp_path):
    from peft import get_peft_model
    from transformers import ViTModel

    from petal_peft import QualityGatedLoraConfig
    from petal_peft.data import FaceImageFolder, FaceTransform
    from petal_peft.embedding.extractor import pooled_embedding
    from petal_peft.training.objective_setup import build_objective

    config = _config(inputs, tmp_path / "out", head_init="imprint", teacher_cache=str(tmp_path / "t.safetensors"))
    folder = FaceImageFolder(inputs[1], transform=FaceTransform(32, horizontal_flip=True))
    model = get_peft_model(ViTModel.from_pretrained(str(inputs[0])), QualityGatedLoraConfig(r=2, lora_alpha=2))
    with torch.no_grad():  # a non-zero adapter: the prototypes must still be the frozen base's
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    head, _, info = build_objective(config, model, folder, 32, "base-fp", {"n": 24})
    assert info["teacher_targets"] == "computed"
    base = ViTModel.from_pretrained(str(inputs[0])).eval()
    x = torch.stack([teacher_cache.sharp_view(folder, i) for i in range(len(folder))])
    with torch.no_grad():
        emb = F.normalize(pooled_embedding(base(pixel_values=torch.cat([x, x.flip(-1)]))), dim=-1)
    labels = torch.tensor(folder.labels)
    for c in range(4):
        rows = torch.cat([emb[:24][labels == c], emb[24:][labels == c]])
        assert torch.allclose(head.weight[c], F.normalize(rows.mean(0), dim=0), atol=1e-5)
    random_head, _, _ = build_objective(_config(inputs, tmp_path / "r"), model, folder, 32, "base-fp", {"n": 24})
    assert not torch.allclose(random_head.weight, head.weight, atol=1e-2)


def test_distillation_loss_and_bad_configs():
    a = torch.randn(4, 8)
    assert float(distillation_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(a, -a)) == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(a, a[:, :4])
    from petal_peft.training import FaceAdapterTrainingConfig

    with pytest.raises(ValueError, match="--objective must be one of"):
        FaceAdapterTrainingConfig(objective="contrastive")
    with pytest.raises(ValueError, match="--head-init imprint needs a margin head"):
        parse_args(["--objective", "distill", "--head-init", "imprint"])
