"""Default target modules per architecture, explicit targets, and the errors around them."""

import re

import pytest
import torch
from peft import get_peft_model
from tiny_models import embedding, images, randomize_adapters, tiny_model
from torch import nn

from petal_peft import QualityGatedLinear, QualityGatedLoraConfig

EXPECTED = {
    "vit": r"layers\.\d\.attention\.[qkv]_proj|pooler\.dense",
    "deit": r"layers\.\d\.attention\.[qkv]_proj|pooler\.dense",
    "dinov2": r"encoder\.layer\.\d\.attention\.[qkv]_proj",
    "swin": r"encoder\.layers\.\d\.blocks\.\d\.attention\.[qkv]_proj",
    "clip": r"vision_model\.encoder\.layers\.\d\.self_attn\.[qkv]_proj|visual_projection",
    "siglip": r"encoder\.layers\.\d\.self_attn\.[qkv]_proj|head\.mlp\.fc2",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_default_targets_are_qkv_plus_final_projection(kind):
    base = tiny_model(kind)
    linear_names = [name for name, module in base.named_modules() if isinstance(module, nn.Linear)]
    expected = {name for name in linear_names if re.fullmatch(EXPECTED[kind], name)}
    assert expected, "the tiny model has no such layers: the expectation itself is wrong"
    model = get_peft_model(base, QualityGatedLoraConfig(lora_dropout=0.0))
    adapted = {
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if isinstance(module, QualityGatedLinear)
    }
    assert adapted == expected
    randomize_adapters(model)
    x = images(2)
    low, high = (embedding(model(pixel_values=x, quality=torch.full((2,), v))) for v in (0.0, 1.0))
    assert not torch.allclose(low, high), "the adapter has no effect on the output"


def test_model_without_default_asks_for_target_modules():
    base = tiny_model("beit")  # no default targets for BEiT
    with pytest.raises(ValueError, match="target_modules"):
        get_peft_model(base, QualityGatedLoraConfig())


def test_explicit_targets_work_on_any_model():
    base = tiny_model("beit")  # no default targets for BEiT
    model = get_peft_model(base, QualityGatedLoraConfig(target_modules=["q_proj", "v_proj"]))
    assert sum(isinstance(m, QualityGatedLinear) for m in model.modules()) == 2


def test_non_linear_target_is_refused():
    base = tiny_model("vit")
    with pytest.raises(ValueError, match="nn.Linear layers only"):
        get_peft_model(base, QualityGatedLoraConfig(target_modules=["projection"]))  # patch-embedding Conv2d


def test_target_inside_multihead_attention_is_refused():
    base = tiny_model("siglip")
    with pytest.raises(ValueError, match="MultiheadAttention"):
        get_peft_model(base, QualityGatedLoraConfig(target_modules=["out_proj"]))
