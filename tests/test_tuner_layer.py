"""The layer math: y = W x + b + s B_hq A_hq (q x) + s B_lq A_lq ((1 - q) x), per image."""

import pytest
import torch
from peft import get_peft_model
from testing_utils import embedding, images, randomize_adapters, tiny_model, tiny_vit
from torch import nn

import petal_peft
from petal_peft import QualityGatedLinear, QualityGatedLoraConfig


class Wrapper(nn.Module):
    def __init__(self, in_features=6, out_features=5):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, pixel_values):
        return self.proj(pixel_values)


def gated(model, **config):
    config = {"target_modules": ["proj"], "lora_dropout": 0.0, **config}
    peft_model = get_peft_model(model, QualityGatedLoraConfig(**config))
    randomize_adapters(peft_model)
    return peft_model.eval()


@pytest.mark.parametrize("shape", [(4, 6), (4, 3, 6), (4, 2, 3, 6)])
def test_layer_matches_the_formula_per_image(shape):
    torch.manual_seed(0)
    model = gated(Wrapper(), r=2, lora_alpha=6)
    layer = model.base_model.model.proj
    x = torch.randn(*shape)
    q = torch.tensor([0.0, 0.25, 0.8, 1.0])
    out = model(pixel_values=x, quality=q)
    s = 6 / 2
    a_hq, b_hq = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    a_lq, b_lq = layer.lora_A_lq["default"].weight, layer.lora_B_lq["default"].weight
    base = layer.base_layer
    for i in range(shape[0]):
        xi = x[i]
        expected = base(xi) + s * (q[i] * xi) @ a_hq.T @ b_hq.T + s * ((1 - q[i]) * xi) @ a_lq.T @ b_lq.T
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-5)


def test_quality_one_uses_only_the_high_quality_branch():
    model = gated(Wrapper(), r=2)
    layer = model.base_model.model.proj
    x = torch.randn(3, 6)
    before = model(pixel_values=x, quality=torch.ones(3))
    with torch.no_grad():
        layer.lora_B_lq["default"].weight.add_(10.0)  # changing the LQ branch must not matter at q = 1
    torch.testing.assert_close(model(pixel_values=x, quality=torch.ones(3)), before)
    assert not torch.allclose(model(pixel_values=x, quality=torch.zeros(3)), before)


def test_gradients_reach_each_branch_in_proportion_to_its_weight():
    model = gated(Wrapper(), r=2).train()
    layer = model.base_model.model.proj
    model(pixel_values=torch.randn(3, 6), quality=torch.ones(3)).sum().backward()
    assert layer.lora_B["default"].weight.grad.abs().sum() > 0
    assert torch.count_nonzero(layer.lora_B_lq["default"].weight.grad) == 0
    assert layer.base_layer.weight.grad is None  # frozen


def test_each_image_is_independent_of_the_rest_of_the_batch_vit():
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0))
    randomize_adapters(model)
    x, q = images(4), torch.tensor([0.1, 0.9, 0.5, 0.0])
    batched = embedding(model(pixel_values=x, quality=q))
    for i in range(4):
        single = embedding(model(pixel_values=x[i : i + 1], quality=q[i : i + 1]))
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)


def test_swin_windows_get_their_own_image_quality():
    """Swin's window attention sees [B * windows, tokens, C]: each window must use its image's quality."""
    model = get_peft_model(tiny_model("swin"), QualityGatedLoraConfig(lora_dropout=0.0))
    randomize_adapters(model)
    x, q = images(3), torch.tensor([0.0, 1.0, 0.3])
    batched = model(pixel_values=x, quality=q).last_hidden_state
    for i in range(3):
        single = model(pixel_values=x[i : i + 1], quality=q[i : i + 1]).last_hidden_state
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-4, atol=1e-5)


def test_fresh_adapter_is_the_identity():
    base = tiny_vit()
    x = images(2)
    reference = base(pixel_values=x).pooler_output
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig())  # B = 0 at init
    torch.testing.assert_close(embedding(model(pixel_values=x, quality=torch.rand(2))), reference)


def test_dropout_positions_are_both_identity_in_eval_and_random_in_training():
    for position in ("hidden", "input"):
        model = gated(Wrapper(), r=2, lora_dropout=0.5, dropout_position=position)
        x, q = torch.randn(8, 6), torch.rand(8)
        torch.testing.assert_close(model(pixel_values=x, quality=q), model(pixel_values=x, quality=q))
        model.train()
        assert not torch.allclose(model(pixel_values=x, quality=q), model(pixel_values=x, quality=q))


def test_layer_count_and_parameter_share():
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=4, lora_alpha=4))
    layers = [m for m in model.modules() if isinstance(m, QualityGatedLinear)]
    assert len(layers) == 2 * 3 + 1  # q, k, v per block + pooler.dense
    trainable, total = model.get_nb_trainable_parameters()
    # 2 branches x (A: r x in + B: out x r) per layer, all 32 -> 32
    assert trainable == len(layers) * 2 * (4 * 32 + 32 * 4)
    assert petal_peft.QUALITY_GATED_LORA.value == "QUALITY_GATED_LORA"
    assert total > trainable
