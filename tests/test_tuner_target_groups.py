"""Named layer groups (``target_modules="stem+default"``): resolution, the face_conv_vit stem made adaptable end to
end (forward, merge, proxies, save/load, ONNX), and the training flags."""

from __future__ import annotations

import re
import types

import pytest
import torch
from peft import PeftModel, get_peft_model
from tiny_models import randomize_adapters
from transformers import AutoModel

import petal_peft
from petal_peft import QualityGatedConv2d, QualityGatedLayer, QualityGatedLoraConfig
from petal_peft.models import FaceConvViTConfig, FaceConvViTModel

STEM = [
    "embeddings.stem.conv",
    "embeddings.stem.units.0.conv1",
    "embeddings.stem.units.0.conv2",
    "embeddings.stem.units.1.conv1",
    "embeddings.stem.units.1.conv2",
]
DEFAULT = [f"layers.{i}.attention.{p}_proj" for i in range(2) for p in "qkv"] + ["pooler.dense"]


def tiny_conv_vit(seed: int = 0) -> FaceConvViTModel:
    torch.manual_seed(seed)
    config = FaceConvViTConfig(
        image_size=40,
        stem_channels=4,
        stem_units=[[4, 1], [8, 2]],
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        embedding_size=8,
    )
    return FaceConvViTModel(config).eval()


def adapted(targets="stem+default", seed: int = 0) -> torch.nn.Module:
    model = get_peft_model(
        tiny_conv_vit(seed), QualityGatedLoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=targets)
    )
    randomize_adapters(model, std=0.1)
    return model.eval()


def gated_names(model: torch.nn.Module) -> list[str]:
    return sorted(
        name.removeprefix("base_model.model.") for name, m in model.named_modules() if isinstance(m, QualityGatedLayer)
    )


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 40, 40, generator=torch.Generator().manual_seed(seed))


def test_groups_resolve_to_the_right_layers():
    model = tiny_conv_vit()
    groups = petal_peft.target_module_groups(model)
    assert {"stem", "attention", "pooler", "default", "all-linear"} <= set(groups)
    assert petal_peft.target_module_groups("face_conv_vit") == groups
    names = [n for n, _ in model.named_modules() if n]

    def matched(expression):
        regex = petal_peft.resolve_target_modules(model, expression)
        return sorted(n for n in names if re.fullmatch(regex, n))

    assert matched("stem") == sorted(STEM)
    assert matched("stem+default") == sorted(STEM + DEFAULT)
    assert matched(["stem+attention"]) == sorted(STEM + DEFAULT[:-1])
    linear = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    assert matched("stem+all-linear") == sorted(STEM + linear)
    # the default group is the default the adapter uses without target_modules
    assert gated_names(adapted(targets=None)) == sorted(DEFAULT)


def test_lists_regexes_and_other_models_are_left_alone():
    model = tiny_conv_vit()
    for targets in (["q_proj", "v_proj"], r"layers\.\d+\.attention\.q_proj", ["stem"] * 2):
        assert petal_peft.resolve_target_modules(model, targets) == targets
    from tiny_models import tiny_vit

    assert petal_peft.resolve_target_modules(tiny_vit(), "stem+default") == "stem+default"  # no groups registered


def test_a_misspelt_group_is_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r"\['atention'\] are not layer groups of 'face_conv_vit'; its groups are"
    ) as err:
        adapted("stem+atention")
    assert "\n" not in str(err.value)


def test_stem_adapted_end_to_end(tmp_path):
    model = adapted()
    assert gated_names(model) == sorted(STEM + DEFAULT)
    assert isinstance(model.get_submodule("base_model.model.embeddings.stem.units.1.conv1"), QualityGatedConv2d)
    x, q = images(3), torch.tensor([0.0, 0.5, 1.0])
    out = model(pixel_values=x, quality=q).pooler_output
    alone = model(pixel_values=x[1:2], quality=q[1:2]).pooler_output
    torch.testing.assert_close(alone, out[1:2], rtol=1e-5, atol=1e-5)
    # the stem branches alone change the embedding, and in opposite ways at the two ends
    stem_only = adapted("stem")
    high = stem_only(pixel_values=x, quality=torch.ones(3)).pooler_output
    low = stem_only(pixel_values=x, quality=torch.zeros(3)).pooler_output
    plain = tiny_conv_vit()(pixel_values=x).pooler_output
    assert (high - low).abs().max() > 1e-3 and (high - plain).abs().max() > 1e-3

    # save: the config holds the resolved regex; reload on a fresh base gives the same outputs
    model.save_pretrained(tmp_path / "adapter")
    saved = QualityGatedLoraConfig.from_pretrained(tmp_path / "adapter").target_modules
    assert isinstance(saved, str) and "stem" in saved
    loaded = PeftModel.from_pretrained(tiny_conv_vit(), tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded(pixel_values=x, quality=q).pooler_output, out)

    # proxies: exact merges that load as plain models
    paths = petal_peft.export_proxy_encoders(model, tmp_path / "proxies")
    for name, quality in (("gallery_encoder", 1.0), ("probe_encoder", 0.0)):
        encoder = AutoModel.from_pretrained(paths[name]).eval()
        assert not any(isinstance(m, QualityGatedLayer) for m in encoder.modules())
        expected = model(pixel_values=x, quality=torch.full((3,), quality)).pooler_output
        torch.testing.assert_close(encoder(pixel_values=x).pooler_output, expected, rtol=1e-5, atol=1e-5)
    petal_peft.tuner.check_proxy_encoders(
        tmp_path / "proxies",
        AutoModel.from_pretrained(paths["gallery_encoder"]),
        AutoModel.from_pretrained(paths["probe_encoder"]),
        base_model=tiny_conv_vit(),
        peft_model=model,
    )


def test_onnx_parity_with_conv_targets(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from petal_peft.embedding import pooled_embedding
    from petal_peft.export import export_onnx, max_relative_difference, onnx_session, run_session

    model = adapted()
    paths = export_onnx(model, None, tmp_path / "onnx", parts=["gated", "probe_encoder"])
    x, q = images(4, seed=2), torch.tensor([0.0, 1.0, 0.3, 0.8])
    with torch.no_grad():
        expected = pooled_embedding(model(pixel_values=x, quality=q))
        probe = pooled_embedding(model(pixel_values=x, quality=torch.zeros(4)))
    gated = run_session(onnx_session(paths["gated"]), {"pixel_values": x, "quality": q})["embedding"]
    assert max_relative_difference(gated, expected) <= 1e-4
    flipped = run_session(onnx_session(paths["gated"]), {"pixel_values": x, "quality": 1 - q})["embedding"]
    assert max_relative_difference(flipped, gated) > 1e-2
    merged = run_session(onnx_session(paths["probe_encoder"]), {"pixel_values": x})["embedding"]
    assert max_relative_difference(merged, probe) <= 1e-4


def test_training_flags_take_a_group_expression():
    from petal_peft.training.modeling import _resolved_target_modules, build_plain_lora_config, check_target_modules

    flags = types.SimpleNamespace(
        target_modules=["stem+default"], lora_r=2, lora_alpha=2, lora_dropout=0.0, init_weights_value=lambda: True
    )
    base = tiny_conv_vit()
    check_target_modules(flags, base)  # no error: the expression names layers
    regex = _resolved_target_modules(flags, base)
    assert sorted(n for n, _ in base.named_modules() if n and re.fullmatch(regex, n)) == sorted(STEM + DEFAULT)
    # PEFT's plain LoRA baseline adapts the same layers (its own Conv2d LoRA on the stem)
    plain = get_peft_model(tiny_conv_vit(), build_plain_lora_config(flags, base))
    lora_layers = sorted(
        n.removeprefix("base_model.model.")
        for n, m in plain.named_modules()
        if hasattr(m, "lora_A") and n.endswith(("conv", "conv1", "conv2", "proj", "dense"))
    )
    assert lora_layers == sorted(STEM + DEFAULT)
    flags.target_modules = ["stem+atention"]
    with pytest.raises(ValueError, match="not layer groups"):
        check_target_modules(flags, base)


def test_training_cli_takes_a_group_expression_and_the_card_shows_the_regex(tmp_path):
    from test_training_helpers import make_face_folder, tiny_flags

    from petal_peft.training import parse_args, train

    tiny_conv_vit().save_pretrained(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    out = tmp_path / "out"
    train(parse_args(tiny_flags(tmp_path / "base", data, out, max_steps=2, target_modules="stem+default")))
    loaded = PeftModel.from_pretrained(tiny_conv_vit(), out / "adapter")
    assert gated_names(loaded) == sorted(STEM + DEFAULT)
    assert any(
        not torch.equal(p, torch.zeros_like(p)) for n, p in loaded.named_parameters() if "stem" in n and "lora_B" in n
    )  # the stem branches trained
    card = (out / "adapter" / "README.md").read_text()
    regex = petal_peft.resolve_target_modules("face_conv_vit", "stem+default")
    assert f"| `target_modules` | `{regex.replace('|', chr(92) + '|')}` |" in card
