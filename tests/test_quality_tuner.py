"""The quality gate inside the tuner: config fields -> same q after save/load (needs petal_peft's tuner)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import ViTConfig, ViTModel

import petal_peft
import petal_peft.quality as Q

TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32, patch_size=8
)


def _images(seed: int) -> torch.Tensor:
    # natural-like textures (1/f amplitude spectrum): white noise would be a distortion to BRISQUE
    g = torch.Generator().manual_seed(seed)
    f = (torch.fft.fftfreq(32)[:, None] ** 2 + torch.fft.rfftfreq(32)[None] ** 2).sqrt().clamp_min(1 / 32)
    spec = torch.complex(torch.randn(4, 3, 32, 17, generator=g), torch.randn(4, 3, 32, 17, generator=g)) / f
    sharp = torch.fft.irfft2(spec, s=(32, 32))
    sharp = ((sharp - sharp.mean((2, 3), keepdim=True)) / sharp.std((2, 3), keepdim=True) * 0.18 + 0.5).clamp(0, 1)
    return torch.cat([sharp, Q.degrade(sharp, 8)])  # 4 sharp, 4 upscaled from 8 px, in [0, 1]


def _model(gate: dict, estimator: str):
    torch.manual_seed(0)
    config = petal_peft.QualityGatedLoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", quality_estimator=estimator, **gate
    )
    model = get_peft_model(ViTModel(ViTConfig(**TINY)), config)
    for name, param in model.named_parameters():  # make both branches non-zero so q changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model.eval()


@pytest.mark.parametrize("estimator", ["resolution", "brisque"])
def test_calibrated_gate_round_trips_through_adapter_config(tmp_path, estimator):
    images = _images(0)
    gate = Q.calibrate_gate(images[:4], images[4:], estimator=estimator, image_mean=[0.0], image_std=[1.0])
    assert json.loads(json.dumps(gate)) == gate
    model = _model(gate, estimator)
    pixel_values = (images - 0.5) / 0.5  # ViT processor normalisation; config image_mean/std None = 0.5
    expected_q = Q.build_quality_fn(estimator, {}, gate["gate_mode"], gate["gate_threshold"], gate["gate_temperature"])(
        pixel_values
    )
    assert (expected_q[:4] > 0.5).all() and (expected_q[4:] < 0.5).all()
    q = model.base_model.estimate_quality(pixel_values)
    torch.testing.assert_close(q, expected_q)
    with torch.no_grad():
        automatic = model(pixel_values=pixel_values).last_hidden_state
        explicit = model(pixel_values=pixel_values, quality=expected_q).last_hidden_state
        flipped = model(pixel_values=pixel_values, quality=1 - expected_q).last_hidden_state
    torch.testing.assert_close(automatic, explicit)
    assert not torch.allclose(automatic, flipped)

    model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert {k: saved[k] for k in gate} == gate and saved["quality_estimator"] == estimator
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(ViTModel(ViTConfig(**TINY)), tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded.base_model.estimate_quality(pixel_values), expected_q)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).last_hidden_state, automatic)
