"""The `petal-peft eval` command end to end on tiny saved models and folders, and the model-index helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from testing_utils import LeftHalfBrightness, SigmoidGate, gated_tiny_vit, tiny_vit

import petal_peft
from petal_peft.cli import main
from petal_peft.evaluation import metrics_to_model_index, report_to_model_index
from petal_peft.registry import QUALITY_ESTIMATORS, QUALITY_GATES

QUALITY_ESTIMATORS.register("eval_cli_left_brightness", LeftHalfBrightness, overwrite=True)
QUALITY_GATES.register("eval_cli_sigmoid", SigmoidGate, overwrite=True)


def random_image(path, rng, size=24) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    rng = np.random.default_rng(0)
    data = root / "tinyface"
    for ident in range(4):
        random_image(str(data / "Gallery_Match" / f"{ident}_0.jpg"), rng)
        random_image(str(data / "Probe" / f"{ident}_1.jpg"), rng)
    for k in range(3):
        random_image(str(data / "Gallery_Distractor" / f"{100 + k}_0.jpg"), rng)
    model_dir = root / "base"
    tiny_vit().save_pretrained(model_dir)
    peft_model = gated_tiny_vit("eval_cli_left_brightness", "eval_cli_sigmoid")
    peft_model.save_pretrained(root / "adapter")
    petal_peft.export_proxy_encoders(peft_model, str(root / "proxies"))
    return root


def run_cli(workspace, out, *args: str, data=None) -> int:
    """``petal-peft eval`` of the workspace's base on its TinyFace folder (or ``data``), into ``out``."""
    data = workspace / "tinyface" if data is None else data
    common = ["--model", str(workspace / "base"), "--benchmark", "tinyface", "--data", str(data), "--out", str(out)]
    return main(["eval", *common, *args, "--no-progress", "--batch-size", "3"])


def test_eval_plain_model_writes_report_and_plots(workspace, tmp_path, capsys):
    rc = run_cli(workspace, str(tmp_path))
    assert rc == 0
    report = json.loads((tmp_path / "tinyface_report.json").read_text())
    assert list(report["results"]) == ["plain"]
    m = report["results"]["plain"]
    assert 0 <= m["rank-1"] <= m["rank-5"] <= 100 and m["gallery_size"] == 7 and m["num_mated_probes"] == 4
    assert report["plots"] == ["tinyface_cmc.png"] and (tmp_path / "tinyface_cmc.png").stat().st_size > 1000
    assert report["transform"]["size"] == [32, 32]
    assert len(report["curves"]["plain"]["cmc"]) == 7
    assert "rank-1" in capsys.readouterr().out


def test_eval_adapter_compares_plain_gate_and_proxy(workspace, tmp_path):
    rc = run_cli(workspace, str(tmp_path), "--adapter", str(workspace / "adapter"))
    assert rc == 0
    report = json.loads((tmp_path / "tinyface_report.json").read_text())
    assert list(report["results"]) == ["plain", "gate", "proxy"]
    assert set(report["comparison"]) == {"gate - plain", "proxy - plain", "proxy - gate"}
    diff = report["comparison"]["proxy - gate"]["mAP"]
    assert diff == pytest.approx(report["results"]["proxy"]["mAP"] - report["results"]["gate"]["mAP"])
    assert report["model"]["gate_settings"]["quality_estimator"] == "eval_cli_left_brightness"
    assert set(report["plots"]) == {"tinyface_cmc.png", "tinyface_quality_gate.png"}

    # the exported proxy encoders give the same numbers as merging the adapter in memory
    out2 = tmp_path / "exported"
    rc = run_cli(workspace, str(out2), "--proxy-encoders", str(workspace / "proxies"), "--modes", "proxy")
    assert rc == 0
    exported = json.loads((out2 / "tinyface_report.json").read_text())["results"]["proxy"]
    for key in ("rank-1", "rank-5", "mAP"):
        assert exported[key] == pytest.approx(report["results"]["proxy"][key], abs=1e-6)


def test_eval_bad_data_is_a_clear_error(workspace, tmp_path, capsys):
    rc = run_cli(workspace, str(tmp_path / "out"), data=tmp_path)
    assert rc == 2
    assert "not a TinyFace test folder" in capsys.readouterr().err
    rc = run_cli(workspace, str(tmp_path / "out"), "--modes", "gate")
    assert rc == 2
    assert "needs an adapter" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "petal_peft.evaluate", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    assert "--benchmark" in out.stdout and "{ijb,tinyface,verification}" in out.stdout


def test_metrics_to_model_index_round_trip():
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    metrics = {"rank-1": 75.4512, "rank-5": 79.05, "mAP": float("nan"), "num_probes": 3728, "tar_method": "x"}
    index = metrics_to_model_index(
        metrics,
        model_name="petal-vit",
        dataset_name="TinyFace",
        dataset_type="tinyface",
        task_name="Face identification",
    )
    assert index[0]["name"] == "petal-vit"
    result = index[0]["results"][0]
    assert result["dataset"] == {"name": "TinyFace", "type": "tinyface", "split": "test"}
    assert result["task"] == {"type": "image-feature-extraction", "name": "Face identification"}
    assert [(m["name"], m["value"]) for m in result["metrics"]] == [("rank-1", 75.4512), ("rank-5", 79.05)]
    name, evals = model_index_to_eval_results(index)
    assert name == "petal-vit" and [e.metric_value for e in evals] == [75.4512, 79.05]
    card = ModelCard.from_template(ModelCardData(model_name="petal-vit", eval_results=evals))
    assert "model-index" in str(card) and "rank-1" in str(card)
    with pytest.raises(ValueError, match="no numeric metrics"):
        metrics_to_model_index({"num_probes": 4}, model_name="m", dataset_name="d")


def test_report_to_model_index_labels_modes():
    report = {
        "benchmark": "ijb",
        "dataset": "IJBC",
        "headline_metrics": ["TAR@FAR=1e-04"],
        "results": {"gate": {"TAR@FAR=1e-04": 95.27, "auc": 99.0}, "proxy": {"TAR@FAR=1e-04": 95.1}},
    }
    index = report_to_model_index(report, "m")
    metrics = index[0]["results"][0]["metrics"]
    assert [m["name"] for m in metrics] == ["TAR@FAR=1e-04 (gate)", "TAR@FAR=1e-04 (proxy)"]
    assert index[0]["results"][0]["dataset"]["name"] == "IJB-C"
    single = report_to_model_index(report, "m", modes=("proxy",))
    assert [m["name"] for m in single[0]["results"][0]["metrics"]] == ["TAR@FAR=1e-04"]
