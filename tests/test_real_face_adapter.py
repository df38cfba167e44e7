"""The published real-face adapter loads onto the real-face base and embeds without ``quality=``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "benchmarks" / "real_face_base"
ADAPTER = REPO / "benchmarks" / "real_face_adapter"

pytestmark = pytest.mark.skipif(not (ADAPTER / "adapter_config.json").is_file(), reason=f"{ADAPTER} is absent")


def test_folder_is_small_and_carries_its_estimator_gate_and_terms():
    size = sum(p.stat().st_size for p in ADAPTER.iterdir())
    assert size <= 2 * 1024 * 1024, f"{size} bytes"
    config = json.loads((ADAPTER / "adapter_config.json").read_text())
    assert config["peft_type"] == "QUALITY_GATED_LORA"
    assert config["quality_estimator"] == "resolution"
    assert config["gate_mode"] == "sigmoid" and config["gate_temperature"] > 0
    card = (ADAPTER / "README.md").read_text()
    assert "research use" in card and "LFW" in card and "LR rank-1" in card


def test_loads_onto_the_base_and_gates_each_image_itself():
    from peft import PeftModel
    from transformers import AutoModel

    import petal_peft  # noqa: F401

    model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(BASE)), str(ADAPTER)).eval()
    base = AutoModel.from_pretrained(str(BASE)).eval()
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 112, 112, generator=g) * 2 - 1
    # a low-resolution copy: down to 16 px and back up
    tiny = torch.nn.functional.interpolate(sharp, size=16, mode="bilinear", antialias=True)
    low = torch.nn.functional.interpolate(tiny, size=112, mode="bilinear")
    x = torch.cat([sharp, low])
    with torch.no_grad():
        q = model.base_model.estimate_quality(x)
        automatic = model(pixel_values=x).pooler_output
        explicit = model(pixel_values=x, quality=q).pooler_output
        untouched = base(pixel_values=x).pooler_output
    assert q.shape == (4,) and bool(((q >= 0) & (q <= 1)).all())
    assert float(q[:2].min()) > float(q[2:].max())  # sharp images get the higher quality
    assert torch.allclose(automatic, explicit, atol=1e-5)
    assert not torch.allclose(automatic[2:], untouched[2:], atol=1e-3)  # the adapter changes low-quality images
