"""`petal-peft calibrate`: an existing adapter's gate fitted on a folder of sharp images, saved atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
from peft import get_peft_model
from PIL import Image
from tiny_models import tiny_vit

from petal_peft import QualityGatedLoraConfig
from petal_peft.cli import main
from petal_peft.quality import quality_fn_from_settings
from petal_peft.training.gate_calibration import calibration_pairs


@pytest.fixture()
def workspace(tmp_path):
    size = tiny_vit().config.image_size
    for k in range(6):
        coarse = np.random.default_rng(k).uniform(0, 255, size=(8, 8, 3))
        img = np.kron(coarse, np.ones((size // 8, size // 8, 1))) + np.random.default_rng(k).normal(
            0, 6, (size, size, 3)
        )
        (tmp_path / "gallery" / f"id{k}").mkdir(parents=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "gallery" / f"id{k}" / "0.png")
    tiny_vit().save_pretrained(tmp_path / "base")
    return tmp_path


def _adapter(path, **gate):
    get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=2, lora_alpha=2, **gate)).save_pretrained(path)
    return path


def _q_sharp_and_degraded(adapter, gallery):
    config = json.loads((adapter / "adapter_config.json").read_text())
    images = [Image.open(p).convert("RGB") for p in sorted(gallery.glob("*/*.png"))]
    sharp, low = calibration_pairs(images, 32, [0.5] * 3, [0.5] * 3, min_size=8, max_size=16, seed=9)
    fn = quality_fn_from_settings(config)
    return fn(sharp), fn(low)


def test_calibrate_fits_an_uncalibrated_adapter(workspace, capsys):
    adapter = _adapter(workspace / "adapter", quality_estimator="resolution")
    q_sharp, q_low = _q_sharp_and_degraded(adapter, workspace / "gallery")
    assert float(q_low.min()) > 0.95  # threshold 0: every image, even 8-16 px, gets q near 1
    code = main(["calibrate", "--model", str(workspace / "base"), "--adapter", str(adapter)]
                + ["--images", str(workspace / "gallery"), "--degrade-max-size", "16", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "calibrated on 6 sharp images" in out and "previous gate: threshold 0.0" in out
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["gate_threshold"] > 1 and config["quality_estimator"] == "resolution"
    assert config["peft_type"] == "QUALITY_GATED_LORA" and config["r"] == 2  # the rest is kept
    q_sharp, q_low = _q_sharp_and_degraded(adapter, workspace / "gallery")
    assert float(q_sharp.median()) > 0.5 > float(q_low.median())
    assert not list(adapter.glob("*.tmp*"))  # written atomically: no temporary file left


def test_dry_run_and_json_leave_the_adapter(workspace, capsys):
    adapter = _adapter(workspace / "adapter", quality_estimator="resolution")
    before = (adapter / "adapter_config.json").read_bytes()
    code = main(["calibrate", "--model", str(workspace / "base"), "--adapter", str(adapter)]
                + ["--images", str(workspace / "gallery"), "--dry-run", "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["gate_threshold"] > 1 and 0.5 <= result["separation_auc"] <= 1
    assert (adapter / "adapter_config.json").read_bytes() == before


def test_an_adapter_without_estimator_needs_one(workspace, capsys):
    adapter = _adapter(workspace / "adapter")
    args = ["calibrate", "--model", str(workspace / "base"), "--adapter", str(adapter)]
    args += ["--images", str(workspace / "gallery")]
    assert main(args) == 2
    assert "has no quality estimator: name one with --quality-estimator" in capsys.readouterr().err
    assert main([*args, "--quality-estimator", "resolution"]) == 0
    assert json.loads((adapter / "adapter_config.json").read_text())["quality_estimator"] == "resolution"
