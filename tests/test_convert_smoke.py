"""CPU smoke run of the paper workflow on tiny converted checkpoints: convert, train_tinyface.py, petal-peft eval."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from petalface_reference import SwinSpec, ViTSpec, swin_state_dict, vit_state_dict
from testing_utils import SCRIPT, make_eval_folder, make_face_folder, tiny_flags

from petal_peft.cli import main
from petal_peft.convert import convert_insightface_vit, convert_petalface_checkpoint

pytestmark = pytest.mark.slow  # trains on converted backbones and evaluates them


def train_script():
    spec = importlib.util.spec_from_file_location("train_tinyface", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")
    torch.save(swin_state_dict(SwinSpec(layout="quality_gated")), root / "swin.pt")
    torch.save(vit_state_dict(ViTSpec()), root / "vit.pt")
    return {
        "swin": convert_petalface_checkpoint(root / "swin.pt", root / "swin", progress=False),
        "vit": convert_insightface_vit(root / "vit.pt", root / "vit", progress=False),
        "train": make_face_folder(root / "train"),
        "eval": make_eval_folder(root / "eval"),
    }


@pytest.mark.parametrize("kind", ["swin", "vit"])
def test_train_script_and_eval_take_a_converted_backbone(converted, tmp_path, kind, capsys):
    base = converted[kind].base_dir
    out = tmp_path / "run"
    flags = tiny_flags(base, converted["train"], out, max_steps=2, per_device_train_batch_size=4)
    assert train_script()(flags) == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    model_type = "face_swin" if kind == "swin" else "face_vit"
    assert adapter["peft_type"] == "QUALITY_GATED_LORA" and model_type in json.dumps(
        json.loads((base / "config.json").read_text())
    )
    assert "embedding_head" in adapter["target_modules"]  # the registered default targets were used
    report_dir = tmp_path / "report"
    argv = ["eval", "--model", str(base), "--adapter", str(out / "adapter"), "--benchmark", "tinyface"]
    argv += ["--data", str(converted["eval"]), "--out", str(report_dir), "--no-progress", "--no-plots"]
    assert main([*argv, "--modes", "plain", "proxy"]) == 0
    report = json.loads((report_dir / "tinyface_report.json").read_text())
    assert list(report["results"]) == ["plain", "proxy"]
    size = converted[kind].architecture["image_size"]
    assert report["transform"]["size"] == [size, size]


def test_eval_takes_the_converted_petalface_adapter(converted, tmp_path):
    result = converted["swin"]
    argv = ["eval", "--model", str(result.base_dir), "--adapter", str(result.adapter_dir), "--benchmark", "tinyface"]
    argv += ["--data", str(converted["eval"]), "--out", str(tmp_path), "--no-progress", "--no-plots"]
    assert main([*argv, "--modes", "plain", "gate", "proxy", "--quality-estimator", "resolution"]) == 0
    report = json.loads((tmp_path / "tinyface_report.json").read_text())
    assert list(report["results"]) == ["plain", "gate", "proxy"]
