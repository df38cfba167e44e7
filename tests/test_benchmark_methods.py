"""The training option ``finetune_method``: plain-LoRA and full fine-tuning baselines next to ours."""

from __future__ import annotations

import pytest
import torch
from testing_utils import make_eval_folder, make_face_folder, make_tiny_base, tiny_settings


def _config(tmp_path, method, **overrides):
    from petal_peft.training import FaceAdapterTrainingConfig

    settings = tiny_settings(
        str(tmp_path / "base"),
        str(tmp_path / "data"),
        str(tmp_path / f"out-{method}"),
        finetune_method=method,
        max_steps=3,
        warmup_steps=1,
        use_cpu=True,
    )
    return FaceAdapterTrainingConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    make_tiny_base(root / "base")
    make_face_folder(root / "data", identities=4, per_identity=6)
    make_eval_folder(root / "eval")
    return root


def test_unknown_method_is_refused(tmp_path):
    from petal_peft.training import FaceAdapterTrainingConfig

    with pytest.raises(ValueError, match="finetune-method"):
        FaceAdapterTrainingConfig(finetune_method="adalora")


def test_baselines_need_no_quality_source(tmp_path):
    cfg = _config(tmp_path, "lora", degrade_fraction=0.0)
    assert cfg.resolved_quality_source() == "none"
    with pytest.raises(ValueError, match="per-image quality"):  # refused when the config is made
        _config(tmp_path, "quality_gated", degrade_fraction=0.0, quality_estimator="none")


def test_plain_lora_matches_the_trainable_parameter_count(inputs):
    from transformers import ViTModel

    from petal_peft.training.modeling import backbone_parameter_counts, build_backbone, resolve_image_settings

    counts = {}
    for method in ("quality_gated", "lora", "full"):
        cfg = _config(inputs, method)
        base = ViTModel.from_pretrained(inputs / "base")
        backbone = build_backbone(base, cfg, resolve_image_settings(cfg))
        counts[method] = backbone_parameter_counts(backbone)
    base_total = sum(p.numel() for p in ViTModel.from_pretrained(inputs / "base").parameters())
    assert counts["lora"][0] == counts["quality_gated"][0] > 0
    assert counts["full"] == (base_total, base_total)
    lora_cfg = build_backbone(ViTModel.from_pretrained(inputs / "base"), _config(inputs, "lora"), None).peft_config
    assert lora_cfg["default"].r == 4 and lora_cfg["default"].lora_alpha == 4  # rank 2r, same scale


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_baseline_trains_saves_and_reloads(inputs, method):
    from peft import PeftModel
    from transformers import AutoModel, ViTModel

    from petal_peft.training import train

    cfg = _config(inputs, method, eval_data=str(inputs / "eval"))
    result = train(cfg)
    assert result.finetune_method == method and result.global_step == 3
    assert 0 <= result.metrics_after["rank-1"] <= 100 and result.metrics_after["mode"] == "plain"
    base = ViTModel.from_pretrained(inputs / "base").eval()
    if method == "lora":  # PEFT wraps its base in place: give it its own copy
        model = PeftModel.from_pretrained(ViTModel.from_pretrained(inputs / "base"), result.adapter_dir).eval()
        assert result.trainable_parameters < result.total_parameters
    else:
        model = AutoModel.from_pretrained(result.adapter_dir).eval()
        assert result.trainable_parameters == result.total_parameters
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        changed = (model(pixel_values=x).pooler_output - base(pixel_values=x).pooler_output).abs().max()
    assert changed > 0  # the saved weights are the trained ones, not the base
    assert "baseline" in (inputs / f"out-{method}" / "adapter" / "README.md").read_text()
