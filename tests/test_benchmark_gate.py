"""The benchmark's gate choice: the sigmoid, or the clamped ramp that gives clearly sharp images exactly q = 1."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from petal_peft.benchmark import real_face_settings
from petal_peft.benchmark.run import benchmark_gate
from petal_peft.quality import quality_fn_from_settings

PS = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def calibration_images(seed: int = 0) -> SimpleNamespace:
    """uint8 detailed images and their 8-px captures upscaled back to 32 px (what the benchmark calibrates on)."""
    g = torch.Generator().manual_seed(seed)
    sharp = (torch.rand(24, 3, 32, 32, generator=g) * 255).round()
    small = F.interpolate(sharp, size=(8, 8), mode="area")
    low = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).round()
    return SimpleNamespace(calib_sharp=sharp.to(torch.uint8), calib_low=low.to(torch.uint8))


def test_gate_mode_is_checked():
    with pytest.raises(ValueError, match="gate_mode"):
        real_face_settings(None, "unused", gate_mode="step")
    assert real_face_settings(None, "unused").gate_mode == "sigmoid"


def test_the_linear_gate_gives_clearly_sharp_and_degraded_images_exactly_one_and_zero():
    data = calibration_images()
    sigmoid = benchmark_gate(data, PS)
    linear = benchmark_gate(data, PS, "linear")
    assert sigmoid["gate_mode"] == "sigmoid" and linear["gate_mode"] == "linear"
    assert linear["gate_threshold"] == pytest.approx(sigmoid["gate_threshold"])
    assert linear["gate_temperature"] == pytest.approx(4 * sigmoid["gate_temperature"])  # same slope at threshold
    settings = {**linear, "quality_estimator": "resolution", **PS}
    sharp_q = quality_fn_from_settings(settings)((data.calib_sharp.float() / 255 - 0.5) / 0.5)
    low_q = quality_fn_from_settings(settings)((data.calib_low.float() / 255 - 0.5) / 0.5)
    assert torch.all(sharp_q == 1.0) and torch.all(low_q == 0.0)
    sigmoid_q = quality_fn_from_settings({**sigmoid, "quality_estimator": "resolution", **PS})
    assert torch.all(sigmoid_q((data.calib_sharp.float() / 255 - 0.5) / 0.5) < 1.0)
