"""The convolutional-stem face transformer: shapes, the stem's size arithmetic, AutoModel round trip, the tuner."""

from __future__ import annotations

import re

import pytest
import torch
from peft import get_peft_model
from testing_utils import adapted_module_names, randomize_adapters, tiny_face_conv_vit_config
from torch import nn
from transformers import AutoConfig, AutoModel

from petal_peft import QualityGatedLinear, QualityGatedLoraConfig
from petal_peft.models import FaceConvViTConfig, FaceConvViTModel
from petal_peft.models.face_conv_vit.configuration_face_conv_vit import stem_output_size


def test_shapes_and_token_count():
    torch.manual_seed(0)
    config = tiny_face_conv_vit_config()
    model = FaceConvViTModel(config).eval()
    out = model(pixel_values=torch.randn(3, 3, 40, 40), output_hidden_states=True)
    # 40 -> conv 7/2: 17 -> max-pool 3/2: 8 -> strided unit: max(conv 3/2: 3, pooled shortcut: 4) = 4
    assert config.num_tokens == 16
    assert out.last_hidden_state.shape == (3, 16, 16)
    assert out.pooler_output.shape == (3, 8)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(out.pooler_output, model.pooler.dense(out.last_hidden_state.mean(1)))


@pytest.mark.parametrize("size,expected", [(150, 8), (112, 6), (40, 2)])
def test_stem_output_size_follows_the_network(size, expected):
    units = [[32, 1]] * 3 + [[64, 2]] + [[64, 1]] * 3 + [[128, 2]]
    assert stem_output_size(size, 7, units) == expected
    config = FaceConvViTConfig(image_size=size, stem_units=units, hidden_size=16, num_attention_heads=2)
    stem = FaceConvViTModel(config).embeddings.stem
    assert stem(torch.zeros(1, 3, size, size)).shape[-1] == expected


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="strides must be 1 or 2"):
        tiny_face_conv_vit_config(stem_units=[[4, 3]])
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tiny_face_conv_vit_config(hidden_size=15)
    with pytest.raises(ValueError, match="too small"):
        tiny_face_conv_vit_config(image_size=8)
    model = FaceConvViTModel(tiny_face_conv_vit_config())
    with pytest.raises(ValueError, match=r"expects pixel_values of shape \[B, 3, 40, 40\]"):
        model(pixel_values=torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\[B, 3, 40, 40\].*got \(1, 1, 40, 40\)"):  # channels are checked too
        model(pixel_values=torch.zeros(1, 1, 40, 40))


def test_auto_classes_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FaceConvViTModel(tiny_face_conv_vit_config()).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "face_conv_vit"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, FaceConvViTModel)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).pooler_output, model(pixel_values=x).pooler_output)


def test_tuner_targets_attention_and_the_final_projection():
    torch.manual_seed(0)
    base = FaceConvViTModel(tiny_face_conv_vit_config()).eval()
    expected = {
        name
        for name, module in base.named_modules()
        if isinstance(module, nn.Linear) and re.fullmatch(r"layers\.\d\.attention\.[qkv]_proj|pooler\.dense", name)
    }
    assert len(expected) == 7
    model = get_peft_model(base, QualityGatedLoraConfig(lora_dropout=0.0))
    adapted = adapted_module_names(model, QualityGatedLinear)
    assert adapted == expected
    randomize_adapters(model)
    x = torch.randn(2, 3, 40, 40)
    low, high = (model(pixel_values=x, quality=torch.full((2,), q)).pooler_output for q in (0.0, 1.0))
    assert not torch.allclose(low, high)
