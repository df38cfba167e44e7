"""The committed real-face base (benchmarks/real_face_base/): it loads with the Auto classes, carries its terms,
its identities are the base group's only, and (with dlib and the photos) it tells real people apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from testing_utils import FACES, needs_dlib, needs_faces
from transformers import AutoImageProcessor, AutoModel

import petal_peft  # noqa: F401  (registers the architecture with AutoModel)

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks" / "real_face_base"
pytestmark = pytest.mark.skipif(not (FOLDER / "config.json").is_file(), reason=f"no built base at {FOLDER}")


def test_loads_with_the_auto_classes_and_embeds():
    model = AutoModel.from_pretrained(FOLDER).eval()
    processor = AutoImageProcessor.from_pretrained(FOLDER)
    assert next(model.parameters()).dtype == torch.float32
    images = [np.random.default_rng(i).integers(0, 256, (112, 112, 3), dtype=np.uint8) for i in range(2)]
    with torch.no_grad():
        out = model(**processor(images, return_tensors="pt")).pooler_output
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    assert (FOLDER / "model.safetensors").stat().st_size <= 20 * 2**20


def test_carries_the_data_terms_and_no_images():
    assert "research" in (FOLDER / "NOTICE").read_text().lower()
    card = (FOLDER / "README.md").read_text()
    assert "research use only" in card.lower() and "base_identities.json" in card
    suffixes = {p.suffix.lower() for p in FOLDER.rglob("*") if p.is_file()}
    assert not suffixes & {".jpg", ".jpeg", ".png", ".bmp", ".npz", ".npy"}


@needs_faces
def test_identities_are_the_base_group_and_nobody_else():
    from petal_peft.data.lfw import lfw_face_groups

    groups = lfw_face_groups(FACES / "lfw", [FACES / "glint_celeb24"])
    recorded = set(json.loads((FOLDER / "base_identities.json").read_text())["identities"])
    assert recorded == set(groups.base)
    for other in (groups.eval, groups.validation, groups.adapt):
        assert not recorded & set(other)


@needs_dlib
@needs_faces
def test_tells_unseen_people_apart():
    """On 40 + 40 evaluation pairs (people the base never saw), same-person pairs are closer than others."""
    from PIL import Image

    from petal_peft.align import FaceAligner
    from petal_peft.data.lfw import read_lfw_pairs

    pairs = [p for p in read_lfw_pairs(FACES / "lfw") if p.fold == 0]
    pairs = [p for p in pairs if p.same][:40] + [p for p in pairs if not p.same][:40]
    aligner = FaceAligner()
    model = AutoModel.from_pretrained(FOLDER).eval()
    processor = AutoImageProcessor.from_pretrained(FOLDER)

    def embed(rel: str) -> torch.Tensor:
        face = aligner(Image.open(FACES / "lfw" / rel)).image
        with torch.no_grad():
            return model(**processor([face], return_tensors="pt")).pooler_output[0]

    cos = torch.stack([torch.cosine_similarity(embed(p.first), embed(p.second), dim=0) for p in pairs])
    same, diff = cos[:40], cos[40:]
    auc = (same[:, None] > diff[None, :]).float().mean().item()
    assert auc > 0.9, f"AUC {auc:.3f} on 40 + 40 unseen LFW pairs"
