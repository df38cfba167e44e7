"""Command-line flags, bad data failing before any training step, model card and Hub push (mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags

from petal_peft.data import DataValidationError
from petal_peft.training import FaceAdapterTrainingConfig, parse_args, render_model_card, train


# ---- flags ---------------------------------------------------------------------------------------------------
def test_every_config_field_is_a_flag():
    config = parse_args(
        [
            "--base_model",
            "org/face-vit",
            "--lora-r",
            "4",
            "--target_modules",
            "q_proj",
            "v_proj",
            "--quality_estimator",
            "brisque",
            "--quality_estimator_kwargs",
            '{"precision": "float64"}',
            "--gate_threshold",
            "30",
            "--mixed_precision",
            "bf16",
            "--gradient_checkpointing",
            "--no_horizontal_flip",
            "--resume_from_checkpoint",
            "latest",
            "--push_to_hub",
            "--hub_model_id",
            "me/x",
        ]
    )
    assert config.base_model == "org/face-vit" and config.lora_r == 4
    assert config.target_modules == ["q_proj", "v_proj"]
    assert config.estimator_kwargs() == {"precision": "float64"}
    assert config.mixed_precision == "bf16" and config.gradient_checkpointing and not config.horizontal_flip
    assert config.resolved_quality_source() == "estimator"
    defaults = parse_args([])
    assert defaults.uses_embedded_default
    assert (defaults.learning_rate, defaults.weight_decay, defaults.max_grad_norm, defaults.head) == (
        5e-4,
        0.1,
        5.0,
        "cosface",
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--degrade_fraction", "1.5"], "--degrade-fraction"),
        (["--quality_source", "estimator", "--quality_estimator", "none"], "needs --quality-estimator"),
        (["--quality_source", "degradation", "--degrade_fraction", "0"], "needs --degrade-fraction"),
        (["--quality_estimator_kwargs", "[1]"], "JSON object"),
        (["--push_to_hub"], "--hub-model-id"),
        (["--per_device_train_batch_size", "0"], "--per-device-train-batch-size"),
    ],
)
def test_bad_flags_are_named(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_unknown_choice_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mixed_precision", "fp8"])
    assert "mixed_precision" in capsys.readouterr().err


def test_no_quality_source_is_an_error_when_the_config_is_made():
    with pytest.raises(ValueError, match="no per-image quality"):
        FaceAdapterTrainingConfig(degrade_fraction=0.0, quality_estimator=None)
    assert FaceAdapterTrainingConfig(degrade_fraction=0.0, finetune_method="lora").resolved_quality_source() == "none"


# ---- bad data --------------------------------------------------------------------------------------------------
def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded although the data is bad")


def test_corrupt_image_fails_before_any_step(tmp_path, monkeypatch):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    (data / "id2" / "3.png").write_bytes(b"this is not a png")
    monkeypatch.setattr("petal_peft.training.trainer.load_base_model", _no_model)
    config = parse_args(tiny_flags(base, data, tmp_path / "out"))
    with pytest.raises(DataValidationError, match=r"3\.png"):
        train(config)
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "adapter").exists()


def test_script_reports_bad_data_and_exits_2(tmp_path, monkeypatch, capsys):
    import runpy

    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    (data / "id1").rename(tmp_path / "moved")
    (data / "id1").mkdir()  # an identity folder without images
    monkeypatch.setattr("petal_peft.training.trainer.load_base_model", _no_model)
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "train_tinyface.py"))
    assert script["main"](tiny_flags(base, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "bad training data" in err and "id1" in err and "no images" in err


def test_dataset_smaller_than_a_batch_is_named(tmp_path, monkeypatch):
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train", identities=2, per_identity=2)
    monkeypatch.setattr("petal_peft.training.trainer.load_base_model", _no_model)
    with pytest.raises(DataValidationError, match="fewer than one global batch"):
        train(parse_args(tiny_flags(base, data, tmp_path / "out")))


def test_eval_split_as_training_data_is_refused(tmp_path, monkeypatch):
    from test_training_helpers import make_eval_folder

    base = make_tiny_base(tmp_path / "base")
    monkeypatch.setattr("petal_peft.training.trainer.load_base_model", _no_model)
    with pytest.raises(DataValidationError, match="evaluation split"):
        train(parse_args(tiny_flags(base, make_eval_folder(tmp_path / "ev"), tmp_path / "out")))


# ---- model card and push --------------------------------------------------------------------------------------
def test_model_card_content():
    text = render_model_card(
        model_name="me/petal-tinyface",
        base_model="org/face-vit",
        base_model_is_hub_id=True,
        gate_settings={"quality_estimator": "brisque", "gate_mode": "sigmoid", "gate_threshold": 30.0},
        adapter_settings={"r": 8, "target_modules": ["q_proj", "v_proj"]},
        training_settings={"head": "cosface", "learning_rate": 5e-4},
        metrics_before={"rank-1": 40.0, "mAP": 30.0, "mode": "gate"},
        metrics_after={"rank-1": 55.5, "mAP": 41.25, "mode": "gate"},
        eval_dataset_name="TinyFace",
        train_dataset_name="TinyFace Training_Set",
    )
    card = ModelCard(text)
    assert card.data.library_name == "petal-peft"
    assert card.data.base_model == "org/face-vit"
    assert "quality-gated-lora" in card.data.tags
    index = card.data.to_dict()["model-index"]
    values = {m["name"]: m["value"] for m in index[0]["results"][0]["metrics"]}
    assert values == {"rank-1": 55.5, "mAP": 41.25}
    for needed in (
        "pip install -e .",
        "import petal_peft",
        "PeftModel.from_pretrained",
        "gate_threshold",
        "| rank-1 | 40.00 | 55.50 |",
        "## Gate settings",
        "## Metrics",
    ):
        assert needed in text, needed
    local = ModelCard(
        render_model_card(
            model_name="x",
            base_model="/tmp/local-base",
            base_model_is_hub_id=False,
            gate_settings={},
            adapter_settings={},
            training_settings={},
        )
    )
    assert local.data.base_model is None and "model-index" not in local.data.to_dict()


def test_trained_folder_loads_and_push_uploads_it(tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import ViTModel

    import petal_peft  # noqa: F401
    from petal_peft.heads import load_head

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            assert (Path(kwargs["folder_path"]) / "adapter_model.safetensors").is_file()
            return "https://huggingface.co/me/petal/commit/abc"

    monkeypatch.setattr("petal_peft.training.model_card.HfApi", FakeApi)
    base = make_tiny_base(tmp_path / "base")
    data = make_face_folder(tmp_path / "train")
    out = tmp_path / "out"
    result = train(
        parse_args(
            tiny_flags(base, data, out, max_steps=3, push_to_hub=True, hub_model_id="me/petal", hub_private_repo=True)
        )
    )
    assert result.hub_url == "https://huggingface.co/me/petal/commit/abc"
    create = [c[1] for c in calls if c[0] == "create_repo"]
    upload = [c[1] for c in calls if c[0] == "upload_folder"]
    assert create == [{"repo_id": "me/petal", "private": True, "exist_ok": True, "repo_type": "model"}]
    assert len(upload) == 1 and Path(upload[0]["folder_path"]) == out / "adapter" and upload[0]["repo_id"] == "me/petal"

    folder = out / "adapter"
    assert json.loads((folder / "training_config.json").read_text())["hub_model_id"] == "me/petal"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train"]["global_step"] == 3 and metrics["train"]["final_loss"] > 0
    model = PeftModel.from_pretrained(ViTModel.from_pretrained(base), folder)
    head = load_head(folder)
    x = torch.randn(2, 3, 32, 32)
    emb = model(pixel_values=x, quality=torch.tensor([1.0, 0.0])).pooler_output
    assert head(emb).shape == (2, 4)
