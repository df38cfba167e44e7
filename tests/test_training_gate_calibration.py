"""The gate is calibrated on the training data by default, recorded with the adapter, and checked."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags

from petal_peft.training import parse_args, train
from petal_peft.training.gate_calibration import UncalibratedGateWarning, calibration_pairs


def _q(adapter_dir, sharp, degraded):
    from petal_peft.quality import quality_fn_from_settings

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    fn = quality_fn_from_settings(config)
    return fn(sharp), fn(degraded)


def test_default_training_calibrates_the_gate_and_records_it(tmp_path):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedGateWarning)
        train(parse_args(tiny_flags(base, data, out, max_steps=2)))
    folder = out / "adapter"
    config = json.loads((folder / "adapter_config.json").read_text())
    # an estimator by default, so embed / search / verify can gate each image
    assert config["quality_estimator"] == "resolution"
    assert (config["gate_threshold"], config["gate_temperature"]) != (0.0, 1.0)
    # the calibrated gate tells sharp images from degraded ones (the uncalibrated one gave q = 1 to all)
    from PIL import Image

    images = [Image.open(p) for p in sorted(data.glob("*/*.png"))]
    sharp, degraded = calibration_pairs(images, 32, [0.5] * 3, [0.5] * 3, min_size=8, max_size=16, seed=5)
    q_sharp, q_low = _q(folder, sharp, degraded)
    assert float(q_sharp.median()) > 0.5 > float(q_low.median())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["gate_calibration"]["calibrated"] and metrics["gate_calibration"]["separation_auc"] > 0.8
    card = (folder / "README.md").read_text()
    assert "calibrated on" in card and f"{config['gate_threshold']:.4g}" in card


def test_a_constant_gate_is_a_warning(tmp_path):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    flags = tiny_flags(base, data, tmp_path / "out", max_steps=1, gate_threshold=0.0, gate_temperature=1.0)
    with pytest.warns(UncalibratedGateWarning, match="not calibrated"):
        train(parse_args(flags))


def test_no_estimator_is_still_possible():
    assert parse_args(["--quality_estimator", "none"]).quality_estimator is None
    assert parse_args([]).quality_estimator == "resolution"


def test_calibration_pairs_degrade_every_copy():
    from PIL import Image

    img = Image.fromarray((torch.rand(48, 48, 3) * 255).to(torch.uint8).numpy())
    sharp, low = calibration_pairs([img, img], 32, [0.5] * 3, [0.5] * 3, min_size=8, max_size=8)
    assert sharp.shape == low.shape == (2, 3, 32, 32)
    assert (sharp - low).abs().mean() > 0.05
