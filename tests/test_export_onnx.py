"""ONNX export of the proxy encoders and the gated model: onnxruntime parity with PyTorch, errors, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as T
from peft import get_peft_model
from testing_utils import randomize_adapters, tiny_model
from torch import nn

import petal_peft  # noqa: F401
from petal_peft import QualityGatedLoraConfig, merged_encoder
from petal_peft.evaluation import pooled_embedding

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from petal_peft.export import (  # noqa: E402
    AdapterMismatchError,
    ExportUnsupportedError,
    SelfGatedEncoder,
    compare_with_torch,
    export_onnx,
    max_relative_difference,
    onnx_session,
    parity_batches,
    run_session,
    smooth_images,
)
from petal_peft.quality import ResolutionEstimator, quality_fn_from_settings  # noqa: E402

TOLERANCE = 1e-4
SIZE = (32, 32)


def adapted(kind: str, estimator: str | None = "resolution") -> nn.Module:
    config = QualityGatedLoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, quality_estimator=estimator)
    model = get_peft_model(tiny_model(kind), config)
    randomize_adapters(model)
    return model.eval()


def mixed_images(batch: int, seed: int) -> torch.Tensor:
    """Half random normal pixels, half smooth images (random 4x4 colour fields, upsampled)."""
    noise = torch.randn(batch - batch // 2, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
    return torch.cat([noise, smooth_images(batch // 2, SIZE, seed=seed)])


@pytest.fixture(scope="module")
def vit_export(tmp_path_factory):
    model = adapted("vit")
    paths = export_onnx(model, None, tmp_path_factory.mktemp("vit") / "onnx")
    return model, paths


@pytest.fixture(scope="module")
def swin_export(tmp_path_factory):
    model = adapted("swin", estimator=None)
    paths = export_onnx(model, None, tmp_path_factory.mktemp("swin") / "onnx", parts=["gated"])
    return model, paths


@pytest.mark.slow
def test_importing_petal_peft_and_its_export_package_does_not_import_onnx():
    code = (
        "import sys, petal_peft, petal_peft.export, petal_peft.cli.export\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_folder_and_card(vit_export):
    _, paths = vit_export
    assert set(paths) == {"gallery_encoder", "probe_encoder", "gated", "gated_estimator", "card"}
    card = json.loads(open(paths["card"]).read())
    assert card["exporter"] == "torch.onnx.export(dynamo=True)" and card["opset"] == 20
    assert card["preprocessing"]["image_size"] == [32, 32]
    assert card["preprocessing"]["image_mean"] == [0.5, 0.5, 0.5]
    assert card["source"]["gate_settings"]["quality_estimator"] == "resolution"
    models = card["models"]
    assert models["gallery_encoder"]["merged_quality"] == 1.0 and models["probe_encoder"]["merged_quality"] == 0.0
    assert [i["name"] for i in models["gated"]["inputs"]] == ["pixel_values", "quality"]
    assert models["gated"]["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert models["gated"]["inputs"][1]["shape"] == ["batch"]
    assert [o["name"] for o in models["gated_estimator"]["outputs"]] == ["embedding", "quality", "quality_score"]
    for entry in models.values():
        assert max(entry["max_relative_difference_vs_torch"].values()) <= TOLERANCE
    assert "gated.onnx" in open(os.path.join(os.path.dirname(paths["card"]), "README.md")).read()


@torch.no_grad()
def test_proxy_encoders_match_pytorch(vit_export):
    model, paths = vit_export
    x = mixed_images(6, seed=3)
    for part, quality in (("gallery_encoder", 1.0), ("probe_encoder", 0.0)):
        expected = pooled_embedding(merged_encoder(model, quality)(pixel_values=x))
        actual = run_session(onnx_session(paths[part]), {"pixel_values": x})["embedding"]
        assert max_relative_difference(actual, expected) <= TOLERANCE


@torch.no_grad()
@pytest.mark.parametrize("which", ["vit", "swin"])
def test_gated_graph_uses_each_images_own_quality(which, vit_export, swin_export):
    model, paths = vit_export if which == "vit" else swin_export
    session = onnx_session(paths["gated"])
    x = mixed_images(6, seed=4)
    q = torch.tensor([0.0, 1.0, 0.25, 0.9, 0.6, 0.1])
    expected = pooled_embedding(model(pixel_values=x, quality=q))
    actual = run_session(session, {"pixel_values": x, "quality": q})["embedding"]
    assert max_relative_difference(actual, expected) <= TOLERANCE
    # each row is that image at its own quality: the same as running it alone
    for i in (1, 2):
        alone = run_session(session, {"pixel_values": x[i : i + 1], "quality": q[i : i + 1]})["embedding"]
        assert max_relative_difference(alone[0], expected[i]) <= TOLERANCE
    # and the quality input really reaches the adapted layers
    flipped = run_session(session, {"pixel_values": x, "quality": 1 - q})["embedding"]
    assert max_relative_difference(flipped, actual) > 100 * TOLERANCE


@torch.no_grad()
def test_gated_at_quality_one_is_the_gallery_encoder(vit_export):
    _, paths = vit_export
    x = mixed_images(4, seed=5)
    gated = run_session(onnx_session(paths["gated"]), {"pixel_values": x, "quality": torch.ones(4)})["embedding"]
    gallery = run_session(onnx_session(paths["gallery_encoder"]), {"pixel_values": x})["embedding"]
    assert max_relative_difference(gated, gallery) <= TOLERANCE


@torch.no_grad()
def test_estimator_and_gate_inside_the_graph(vit_export):
    model, paths = vit_export
    x = mixed_images(6, seed=6)
    out = run_session(onnx_session(paths["gated_estimator"]), {"pixel_values": x})
    quality = model.base_model.estimate_quality(x)
    assert quality.min() < quality.max()  # noise and smooth images get different qualities
    assert max_relative_difference(out["quality"], quality) <= TOLERANCE
    # without quality=, the tuner estimates it itself: the graph must give that model's embedding
    assert max_relative_difference(out["embedding"], pooled_embedding(model(pixel_values=x))) <= TOLERANCE


def test_adapter_trained_on_another_base_is_refused(tmp_path):
    adapted("vit", estimator=None).save_pretrained(tmp_path / "adapter")
    tiny_model("swin").save_pretrained(tmp_path / "swin")
    wider = T.ViTModel(
        T.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32)
    )
    wider.save_pretrained(tmp_path / "wider")
    with pytest.raises(AdapterMismatchError, match="trained on a ViTModel, but the base model is a SwinModel"):
        export_onnx(str(tmp_path / "swin"), tmp_path / "adapter", tmp_path / "out")
    with pytest.raises(AdapterMismatchError, match="does not fit the base model ViTModel .*other layer sizes"):
        export_onnx(str(tmp_path / "wider"), tmp_path / "adapter", tmp_path / "out")
    assert not (tmp_path / "out").exists()


class BranchyBackbone(nn.Module):
    """An architecture torch.export cannot trace: Python control flow on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 16)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.proj(pixel_values.flatten(1))
        if features.mean() > 0:
            features = features * 2
        return features


def test_architecture_the_exporter_cannot_take(tmp_path):
    config = QualityGatedLoraConfig(r=2, lora_alpha=2, lora_dropout=0.0, target_modules=["proj"])
    model = get_peft_model(BranchyBackbone(), config)
    with pytest.raises(ExportUnsupportedError, match="BranchyBackbone.*control flow on tensor values"):
        export_onnx(model, None, tmp_path / "out", image_size=8, parts=["probe_encoder"])
    assert not (tmp_path / "out").exists()


def test_cli_export_onnx(tmp_path, capsys):
    from petal_peft.cli import main

    adapted("vit", estimator=None).save_pretrained(tmp_path / "adapter")
    tiny_model("vit").save_pretrained(tmp_path / "base")
    args = ["export", "onnx", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter")]
    assert main([*args, "--out", str(tmp_path / "onnx"), "--parts", "probe_encoder"]) == 0
    assert "max relative difference vs PyTorch" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "onnx")) == ["README.md", "export_card.json", "probe_encoder.onnx"]
    # one line, exit 2: an adapter/base mismatch, and a part that needs an estimator the adapter lacks
    tiny_model("swin").save_pretrained(tmp_path / "swin")
    assert main(["export", "onnx", "--model", str(tmp_path / "swin"), *args[4:], "--out", str(tmp_path / "x")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # earlier lines: the progress bars of save_pretrained above
    assert last.startswith("petal-peft export: error: adapter") and "trained on a ViTModel" in last
    assert main([*args, "--out", str(tmp_path / "x"), "--parts", "gated_estimator"]) == 2
    assert "needs a quality estimator" in capsys.readouterr().err


def test_missing_onnx_extra_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from petal_peft.cli import main

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    args = ["export", "onnx", "--model", "m", "--adapter", "a", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "pip install -e '.[onnx]'" in capsys.readouterr().err


def test_smooth_images_are_smooth_and_in_range():
    x = smooth_images(3, (32, 32), seed=0)
    intensity = x * 0.5 + 0.5
    assert intensity.min() >= 0 and intensity.max() <= 1
    step = (x[..., 1:] - x[..., :-1]).abs().mean()
    assert step < 0.1 * (torch.randn(3, 3, 32, 32).diff(dim=-1).abs().mean())
    assert not np.allclose(x[0].numpy(), x[1].numpy())


def steep_gate_model(temperature: float) -> nn.Module:
    """An adapter whose gate threshold sits at the median score of the export check's own images."""
    estimator = ResolutionEstimator()
    scores = torch.cat([estimator(b["pixel_values"]) for b in parity_batches(SIZE, (0.5,) * 3, (0.5,) * 3)])
    config = QualityGatedLoraConfig(
        r=4,
        lora_alpha=4,
        lora_dropout=0.0,
        quality_estimator="resolution",
        gate_mode="sigmoid",
        gate_threshold=float(scores.median()),
        gate_temperature=temperature,
    )
    model = get_peft_model(tiny_model("vit"), config)
    randomize_adapters(model)
    return model.eval()


@pytest.mark.parametrize("temperature", [0.1, 0.01])
def test_a_steep_gate_is_checked_stage_by_stage(temperature, tmp_path):
    # near a steep gate's threshold, a float32 rounding difference in the score (about 1e-6 of it) moves the
    # quality, and with it the embedding, far more than the tolerance: the check compares each stage on the graph's
    # own input, and the quality against its [0, 1] range
    paths = export_onnx(steep_gate_model(temperature), None, tmp_path / "onnx", parts=["gated_estimator"])
    card = json.loads(open(paths["card"]).read())
    worst = card["models"]["gated_estimator"]["max_relative_difference_vs_torch"]
    assert set(worst) == {"embedding", "quality", "quality_score"}
    assert max(worst.values()) <= TOLERANCE


@torch.no_grad()
def test_the_stagewise_check_still_catches_a_gate_that_differs(tmp_path):
    model = steep_gate_model(1.0)
    paths = export_onnx(model, None, tmp_path / "onnx", parts=["gated_estimator"])
    settings = {**model.peft_config["default"].gate_settings(), "gate_threshold": 0.0}
    function = quality_fn_from_settings(settings)
    other = SelfGatedEncoder(model, function.estimator, function.gate)
    batches = parity_batches(SIZE, (0.5,) * 3, (0.5,) * 3)
    names = ["embedding", "quality", "quality_score"]
    worst = compare_with_torch(
        other, paths["gated_estimator"], batches, ["pixel_values"], names, other.expected_given, {"quality": 1.0}
    )
    assert worst["quality_score"] <= TOLERANCE  # the estimator is the same
    assert worst["quality"] > 100 * TOLERANCE  # the gate is not
