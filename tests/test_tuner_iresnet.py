"""The quality-gated adapter on a tiny face IResNet (gated convolutions in every block, a gated embedding layer):
get_peft_model with the default targets, per-image quality, a fresh-process reload, exact merges, proxy encoders,
ONNX parity, gradient checkpointing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import get_peft_model
from tiny_models import randomize_adapters, tiny_face_iresnet
from transformers import AutoModel

import petal_peft
from petal_peft import QualityGatedConv2d, QualityGatedLayer, QualityGatedLinear, QualityGatedLoraConfig

HERE = os.path.dirname(__file__)
BLOCK_CONVS = [f"layer{s}.0.conv{c}" for s in range(1, 5) for c in (1, 2)]


def adapted(seed: int = 0, **config) -> torch.nn.Module:
    model = get_peft_model(
        tiny_face_iresnet(seed), QualityGatedLoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, **config)
    )
    randomize_adapters(model, std=0.2)
    return model.eval()


def pixels(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def embed(model, x, q=None) -> torch.Tensor:
    return (model(pixel_values=x) if q is None else model(pixel_values=x, quality=q)).pooler_output


def test_default_targets_gate_every_block_conv_and_the_embedding_layer():
    model = adapted()
    gated = {name.removeprefix("base_model.model."): type(m) for name, m in model.named_modules()}
    gated = {name: kind for name, kind in gated.items() if issubclass(kind, QualityGatedLayer)}
    assert gated == {**dict.fromkeys(BLOCK_CONVS, QualityGatedConv2d), "fc": QualityGatedLinear}
    strided = model.get_submodule("base_model.model.layer2.0.conv2")
    assert strided.lora_A_lq["default"].stride == (2, 2) and strided.lora_B["default"].kernel_size == (1, 1)


def test_forward_with_per_image_quality():
    model = adapted()
    x, q = pixels(4), torch.tensor([0.0, 0.3, 0.7, 1.0])
    together = embed(model, x, q)
    for i in range(4):
        torch.testing.assert_close(embed(model, x[i : i + 1], q[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-5)
    high, low = embed(model, x, torch.ones(4)), embed(model, x, torch.zeros(4))
    assert (high - low).abs().max() > 1e-2
    with pytest.raises(ValueError, match="No `quality`"):
        embed(model, x)


def test_save_then_reload_in_a_fresh_process(tmp_path):
    model = adapted()
    tiny_face_iresnet().save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    x, q = pixels(3), torch.tensor([0.0, 0.45, 1.0])
    torch.save({"x": x, "q": q}, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import torch
        import petal_peft
        from peft import PeftModel
        from transformers import AutoModel
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        base = AutoModel.from_pretrained({str(tmp_path / "base")!r})
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
        assert sum(isinstance(m, petal_peft.QualityGatedConv2d) for m in model.modules()) == 8
        out = model(pixel_values=inputs["x"], quality=inputs["q"]).pooler_output
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), embed(model, x, q), rtol=0, atol=0)


@pytest.mark.parametrize("quality", [0.0, 0.6, 1.0])
def test_merge_is_exact_at_a_fixed_quality(quality):
    model = adapted()
    x = pixels(3)
    expected = embed(model, x, torch.full((3,), quality))
    merged = petal_peft.merged_encoder(model, quality)
    assert type(merged).__name__ == "FaceIResNetModel"
    assert not any(isinstance(m, QualityGatedLayer) for m in merged.modules())
    torch.testing.assert_close(embed(merged, x), expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(merged.layer3[0].conv1.weight, tiny_face_iresnet().layer3[0].conv1.weight)


def test_proxy_encoders_reload_as_plain_models(tmp_path):
    model = adapted()
    x = pixels(3)
    paths = petal_peft.export_proxy_encoders(model, tmp_path)
    encoders = {name: AutoModel.from_pretrained(path).eval() for name, path in paths.items()}
    for name, quality in (("gallery_encoder", 1.0), ("probe_encoder", 0.0)):
        expected = embed(model, x, torch.full((3,), quality))
        torch.testing.assert_close(embed(encoders[name], x), expected, rtol=1e-5, atol=1e-5)
    record = petal_peft.tuner.check_proxy_encoders(
        tmp_path,
        encoders["gallery_encoder"],
        encoders["probe_encoder"],
        base_model=tiny_face_iresnet(),
        peft_model=model,
    )
    assert sorted(record["merged_modules"]) == sorted(BLOCK_CONVS + ["fc"])
    with pytest.raises(ValueError, match="not exported from this base model"):
        petal_peft.tuner.check_proxy_encoders(
            tmp_path, encoders["gallery_encoder"], encoders["probe_encoder"], base_model=tiny_face_iresnet(seed=1)
        )


def test_onnx_parity(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from petal_peft.export import export_onnx, max_relative_difference, onnx_session, run_session

    model = adapted()
    paths = export_onnx(model, None, tmp_path / "onnx", parts=["gated", "gallery_encoder", "probe_encoder"])
    x, q = pixels(5, seed=3), torch.tensor([0.0, 1.0, 0.2, 0.5, 0.9])
    with torch.no_grad():
        gated = run_session(onnx_session(paths["gated"]), {"pixel_values": x, "quality": q})["embedding"]
        assert max_relative_difference(gated, embed(model, x, q)) <= 1e-4
        alone = run_session(onnx_session(paths["gated"]), {"pixel_values": x[2:3], "quality": q[2:3]})["embedding"]
        assert max_relative_difference(alone[0], gated[2]) <= 1e-4
        for part, quality in (("gallery_encoder", 1.0), ("probe_encoder", 0.0)):
            merged = run_session(onnx_session(paths[part]), {"pixel_values": x})["embedding"]
            assert max_relative_difference(merged, embed(model, x, torch.full((5,), quality))) <= 1e-4


def test_training_step_with_gradient_checkpointing_sees_each_forwards_quality():
    x = pixels(4)
    grads = []
    for checkpointing in (False, True):
        model = adapted()
        if checkpointing:
            model.base_model.model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        model.train()
        out = embed(model, x, torch.tensor([0.0, 0.2, 0.9, 1.0]))
        embed(model, x, torch.tensor([1.0, 1.0, 0.0, 0.0]))  # a second forward before the backward
        out.square().sum().backward()
        layer = model.get_submodule("base_model.model.layer2.0.conv1")
        grads.append(
            torch.cat([layer.lora_A["default"].weight.grad.flatten(), layer.lora_A_lq["default"].weight.grad.flatten()])
        )
        assert layer.base_layer.weight.grad is None
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_layer_groups_reach_the_stem_and_shortcuts_and_merge_exactly():
    from petal_peft.registry import DEFAULT_TARGET_MODULES

    base = tiny_face_iresnet()
    names = [n for n, _ in base.named_modules() if n]

    def matched(regex):
        return sorted(n for n in names if re.fullmatch(regex, n))

    assert matched(petal_peft.resolve_target_modules(base, "default")) == matched(
        DEFAULT_TARGET_MODULES.get("face_iresnet")
    )
    assert matched(petal_peft.resolve_target_modules(base, "stem")) == ["conv1"]
    shortcuts = [f"layer{s}.0.downsample.0" for s in range(1, 5)]
    model = adapted(target_modules="stem+blocks+shortcuts+fc")
    gated = sorted(
        n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, QualityGatedLayer)
    )
    assert gated == sorted(["conv1", "fc", *BLOCK_CONVS, *shortcuts])
    x = pixels(3)
    expected = embed(model, x, torch.full((3,), 0.3))
    torch.testing.assert_close(embed(petal_peft.merged_encoder(model, 0.3), x), expected, rtol=1e-5, atol=1e-5)
