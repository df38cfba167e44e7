"""Converting insightface arcface_torch ViT checkpoints (and the PETALface repository's LoRA variants)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from petalface_reference import SwinSpec, ViTSpec, swin_state_dict, vit_forward, vit_state_dict
from testing_utils import assert_gated_output_matches, relative_error
from transformers import AutoModel

import petal_peft  # noqa: F401
from petal_peft.cli import main
from petal_peft.convert import CheckpointFormatError, convert_insightface_vit

TOL = 1e-4


def convert(state, tmp_path, **kwargs):
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return convert_insightface_vit(path, tmp_path / "out", progress=False, **kwargs)


def images(spec: ViTSpec, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, spec.image, spec.image, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("norm", ["ln", "bn"])
def test_pretrained_vit_converts_exactly(tmp_path, norm):
    spec = ViTSpec(norm=norm)
    state = vit_state_dict(spec)
    result = convert(state, tmp_path)
    assert result.adapter_dir is None and result.architecture["norm_layer"] == norm
    assert result.architecture["num_hidden_layers"] == 2 and result.architecture["image_size"] == 36
    assert any("mask_token" in note for note in result.notes)
    model = AutoModel.from_pretrained(result.base_dir).eval()
    assert type(model).__name__ == "FaceViTModel" and model.config.hidden_act == "relu6"
    x = images(spec)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, vit_forward(state, spec, x, None)) < TOL


def test_arcface_geometry_keeps_112_px_input(tmp_path):
    spec = ViTSpec(image=112, dim=8, depth=1)  # 12 x 12 patches of 9 px: arcface_torch reads 112 px faces
    state = vit_state_dict(spec)
    result = convert(state, tmp_path)
    assert result.architecture["image_size"] == 112
    model = AutoModel.from_pretrained(result.base_dir).eval()
    x = images(spec, 2)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, vit_forward(state, spec, x, None)) < TOL


@pytest.mark.parametrize("iqa", ["brisque", "cnniqa"])
def test_vit_iqa_lora_converts_exactly(tmp_path, iqa):
    spec = ViTSpec(layout="quality_gated")
    state = vit_state_dict(spec, seed=1)
    result = convert(state, tmp_path, iqa=iqa)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "QUALITY_GATED_LORA"
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(result.base_dir), result.adapter_dir).eval()
    targets = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if hasattr(m, "lora_A_lq")}
    assert targets == {"q_proj", "k_proj", "v_proj", "projection", "output"}
    x, alpha = images(spec), torch.tensor([1.0, 0.6, 0.0])
    with torch.no_grad():
        reference = vit_forward(state, spec, x, alpha)
    assert_gated_output_matches(model, x, alpha, iqa, reference, TOL)


def test_vit_single_branch_lora_is_a_plain_lora_adapter(tmp_path):
    spec = ViTSpec(layout="lora", norm="bn")
    state = vit_state_dict(spec, seed=2)
    result = convert(state, tmp_path)
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["peft_type"] == "LORA"
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(result.base_dir), result.adapter_dir).eval()
    x = images(spec)
    with torch.no_grad():
        assert relative_error(model(pixel_values=x).pooler_output, vit_forward(state, spec, x, None)) < TOL


def test_swin_checkpoint_points_to_the_right_converter(tmp_path):
    with pytest.raises(CheckpointFormatError, match="convert_petalface_checkpoint"):
        convert(swin_state_dict(SwinSpec()), tmp_path)


def test_head_count_must_divide_the_width(tmp_path):
    with pytest.raises(CheckpointFormatError, match="not divisible by num_attention_heads=5"):
        convert(vit_state_dict(ViTSpec()), tmp_path, num_attention_heads=5)


def test_cli_converts_a_vit(tmp_path, capsys):
    path = tmp_path / "vit.pt"
    torch.save(vit_state_dict(ViTSpec(layout="quality_gated")), path)
    code = main(["convert", "insightface-vit", str(path), "--out", str(tmp_path / "out"), "--no_progress"])
    assert code == 0 and "quality_gated" in capsys.readouterr().out
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
