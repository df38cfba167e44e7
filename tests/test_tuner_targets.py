"""Default target modules per architecture, explicit targets, and the errors around them."""

import re

import pytest
import torch
from peft import get_peft_model
from tiny_models import embedding, images, randomize_adapters, tiny_model
from torch import nn

from petal_peft import QualityGatedConv2d, QualityGatedLinear, QualityGatedLoraConfig

EXPECTED = {
    # from the table (the attention projections plus the final projection where there is one)
    "vit": r"layers\.\d\.attention\.[qkv]_proj|pooler\.dense",
    "deit": r"layers\.\d\.attention\.[qkv]_proj|pooler\.dense",
    "dinov2": r"encoder\.layer\.\d\.attention\.[qkv]_proj",
    "swin": r"encoder\.layers\.\d\.blocks\.\d\.attention\.[qkv]_proj",
    "clip": r"vision_model\.encoder\.layers\.\d\.self_attn\.[qkv]_proj|visual_projection",
    "siglip": r"encoder\.layers\.\d\.self_attn\.[qkv]_proj|head\.mlp\.fc2",
    # found from the module structure: no table entry for these model types
    "beit": r"layers\.\d\.attention\.[qkv]_proj",
    "vit_msn": r"layers\.\d\.attention\.[qkv]_proj",
    "dinov2_with_registers": r"encoder\.layer\.\d\.attention\.[qkv]_proj",
    "swinv2": r"encoder\.layers\.\d\.blocks\.\d\.attention\.self\.(query|key|value)",
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


def test_table_and_registry_come_before_the_structural_rule():
    from petal_peft.registry import DEFAULT_TARGET_MODULES as REGISTERED
    from petal_peft.tuner.targets import attention_projection_names, resolve_default_targets

    vit = tiny_model("vit")
    assert "pooler.dense" not in attention_projection_names(vit)  # the rule alone: q/k/v only
    assert re.fullmatch(resolve_default_targets(vit), "pooler.dense")  # the table adds the final projection
    beit = tiny_model("beit")
    REGISTERED.register("beit", ["q_proj"])
    try:
        model = get_peft_model(beit, QualityGatedLoraConfig())
        assert sum(isinstance(m, QualityGatedLinear) for m in model.modules()) == 1  # the registered default won
    finally:
        REGISTERED._entries.pop("beit")


class _FusedQkvBlock(nn.Module):
    """A timm-style attention block: one fused qkv projection."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)


class _TimmLikeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_FusedQkvBlock(), _FusedQkvBlock()])
        self.head = nn.Linear(16, 8)

    def forward(self, pixel_values):
        x = pixel_values
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_fused_qkv_projection_is_found_in_a_non_transformers_model():
    model = get_peft_model(_TimmLikeModel(), QualityGatedLoraConfig(lora_dropout=0.0))
    adapted = sorted(
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if isinstance(module, QualityGatedLinear)
    )
    assert adapted == ["blocks.0.qkv", "blocks.1.qkv"]


def test_model_without_attention_asks_for_target_modules():
    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="target_modules"):
        get_peft_model(base, QualityGatedLoraConfig())


def test_target_modules_that_match_nothing_list_the_linear_layers():
    base = tiny_model("vit")
    with pytest.raises(ValueError, match=r"\['nope'\] match no module of ViTModel.*q_proj"):
        get_peft_model(base, QualityGatedLoraConfig(target_modules=["nope"]))


def test_explicit_targets_work_on_any_model():
    base = tiny_model("beit")
    model = get_peft_model(base, QualityGatedLoraConfig(target_modules=["q_proj", "v_proj"]))
    assert sum(isinstance(m, QualityGatedLinear) for m in model.modules()) == 2


def test_a_target_that_is_neither_linear_nor_conv2d_is_refused():
    base = tiny_model("vit")
    with pytest.raises(ValueError, match="nn.Linear and nn.Conv2d layers only; 'layers.0.layernorm_before' is a"):
        get_peft_model(base, QualityGatedLoraConfig(target_modules=["layernorm_before"]))


def test_the_patch_embedding_conv_can_be_a_target():
    model = get_peft_model(tiny_model("vit"), QualityGatedLoraConfig(target_modules=["projection"]))
    assert isinstance(model.base_model.model.embeddings.patch_embeddings.projection, QualityGatedConv2d)


def test_target_inside_multihead_attention_is_refused():
    base = tiny_model("siglip")
    with pytest.raises(ValueError, match="MultiheadAttention"):
        get_peft_model(base, QualityGatedLoraConfig(target_modules=["out_proj"]))
