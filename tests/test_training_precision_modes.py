"""Mixed precision, gradient checkpointing and estimator-computed quality inside the real training loop."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from testing_utils import make_eval_folder, make_face_folder, make_tiny_base, tiny_flags

from petal_peft.training import parse_args, train

pytestmark = pytest.mark.slow  # trains a run per mode


@pytest.mark.parametrize(
    "overrides",
    [
        {"mixed_precision": "bf16"},
        {"gradient_checkpointing": True},
        {"quality_estimator": "resolution", "gate_threshold": 8.0, "gate_temperature": 2.0},
    ],
    ids=["bf16", "gradient-checkpointing", "estimator-quality"],
)
def test_training_mode_runs_and_updates_both_branches(tmp_path, overrides):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    eval_dir = make_eval_folder(tmp_path / "eval")
    config = parse_args(tiny_flags(base, data, tmp_path / "out", eval_data=eval_dir, **overrides))
    result = train(config)
    weights = load_file(f"{result.adapter_dir}/adapter_model.safetensors")
    high = [v for k, v in weights.items() if ".lora_B.weight" in k]
    low = [v for k, v in weights.items() if ".lora_B_lq.weight" in k]
    assert high and low
    # B starts at zero: training must have moved both branches, and nothing may be NaN.
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert any(v.abs().sum() > 0 for v in high) and any(v.abs().sum() > 0 for v in low)
    # the evaluation after training ran on the eval folder and gave percentages
    metrics = result.metrics_after
    assert 0.0 <= metrics["rank-1"] <= metrics["rank-5"] <= 100.0, metrics
    assert 0.0 <= metrics["mAP"] <= 100.0, metrics


def test_missing_tensorboard_is_a_clear_error_before_training(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name in ("tensorboard", "tensorboardX") else real_find_spec(name, *a, **k),
    )
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    config = parse_args(tiny_flags(base, data, tmp_path / "out", report_to="tensorboard"))
    with pytest.raises(ValueError, match="pip install tensorboard"):
        train(config)
    assert not (tmp_path / "out" / "adapter").exists()
