"""Merging at a fixed quality, proxy encoders, and the multi-adapter API."""

import subprocess
import sys
import textwrap

import pytest
import torch
from peft import get_peft_model
from testing_utils import embedding, images, randomize_adapters, tiny_vit
from torch import nn

import petal_peft
from petal_peft import QualityGatedLinear, QualityGatedLoraConfig


def gated_vit(**config):
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0, **config))
    randomize_adapters(model)
    return model


@pytest.mark.parametrize("quality", [0.0, 0.3, 1.0])
def test_merge_and_unload_is_exact_at_that_quality(quality):
    model = gated_vit()
    x = images(3)
    expected = embedding(model(pixel_values=x, quality=torch.full((3,), quality)))
    plain = model.merge_and_unload(quality=quality)
    assert not any(isinstance(m, QualityGatedLinear) for m in plain.modules())
    assert type(plain).__name__ == "ViTModel"
    torch.testing.assert_close(plain(pixel_values=x).pooler_output, expected, rtol=1e-5, atol=1e-5)


def test_merge_and_unload_needs_a_quality():
    with pytest.raises(ValueError, match="quality"):
        gated_vit().merge_and_unload()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gated_vit().merge_and_unload(quality=2.0)


def test_merge_adapter_then_unmerge_restores_the_gated_model():
    model = gated_vit()
    x, q = images(3), torch.tensor([0.1, 0.5, 0.9])
    before = embedding(model(pixel_values=x, quality=q))
    base_weight = model.base_model.model.layers[0].attention.q_proj.base_layer.weight.clone()
    model.merge_adapter(quality=0.0)
    merged = embedding(model(pixel_values=x))  # merged: no quality needed
    torch.testing.assert_close(merged, embedding(gated_vit()(pixel_values=x, quality=torch.zeros(3))))
    model.unmerge_adapter()
    torch.testing.assert_close(model.base_model.model.layers[0].attention.q_proj.base_layer.weight, base_weight)
    torch.testing.assert_close(embedding(model(pixel_values=x, quality=q)), before)


@pytest.mark.slow
def test_proxy_encoders_load_without_petal_peft(tmp_path):
    model = gated_vit()
    x = images(2)
    paths = petal_peft.export_proxy_encoders(model, tmp_path)
    for name, quality in (("gallery_encoder", 1.0), ("probe_encoder", 0.0)):
        torch.save(x, tmp_path / "x.pt")
        script = textwrap.dedent(
            f"""
            import sys, torch
            from transformers import AutoModel
            model = AutoModel.from_pretrained({paths[name]!r}).eval()
            assert "petal_peft" not in sys.modules
            out = model(pixel_values=torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)).pooler_output
            torch.save(out, {str(tmp_path / "out.pt")!r})
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True)
        expected = embedding(model(pixel_values=x, quality=torch.full((2,), quality)))
        torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected, rtol=1e-5, atol=1e-5)
    # the PeftModel itself is untouched by exporting
    assert any(isinstance(m, QualityGatedLinear) for m in model.modules())


def test_multiple_adapters_set_delete_disable_unload():
    model = gated_vit()
    model.add_adapter("second", QualityGatedLoraConfig(r=4, lora_alpha=4, lora_dropout=0.0))
    randomize_adapters(model, seed=5)
    x, q = images(2), torch.tensor([0.3, 0.6])
    first = embedding(model(pixel_values=x, quality=q))
    model.set_adapter("second")
    second = embedding(model(pixel_values=x, quality=q))
    assert not torch.allclose(first, second)
    with model.disable_adapter():
        plain = embedding(model(pixel_values=x))  # adapters off: no quality needed
    torch.testing.assert_close(plain, tiny_vit()(pixel_values=x).pooler_output)
    model.set_adapter("default")
    model.delete_adapter("second")
    assert list(model.peft_config) == ["default"]
    assert not any("second" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(embedding(model(pixel_values=x, quality=q)), first)
    base = model.unload()
    torch.testing.assert_close(base(pixel_values=x).pooler_output, plain)
    base(pixel_values=x)  # no hook left behind that would pop or demand quality


def test_modules_to_save_trains_and_saves_a_head(tmp_path):
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = tiny_vit()
            self.head = nn.Linear(32, 5)

        def forward(self, pixel_values):
            return self.head(self.backbone(pixel_values=pixel_values).pooler_output)

    config = QualityGatedLoraConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["head"])
    model = get_peft_model(WithHead(), config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("head.modules_to_save" in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    model(pixel_values=images(2), quality=torch.ones(2)).sum().backward()
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    assert any(k.startswith("base_model.model.head") for k in load_file(tmp_path / "adapter_model.safetensors"))


def test_print_trainable_parameters(capsys):
    gated_vit().print_trainable_parameters()
    assert "trainable params" in capsys.readouterr().out


def test_add_weighted_adapter_is_refused():
    with pytest.raises(NotImplementedError, match="add_weighted_adapter"):
        gated_vit().add_weighted_adapter(["default"], [1.0], "mix")
