"""search / verify refuse an index or an evaluation report made with other model weights (base or adapter),
compared by weight fingerprints rather than by names."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from peft import get_peft_model
from testing_utils import cli, randomize_adapters, tiny_vit

from petal_peft import QualityGatedLoraConfig
from petal_peft.inference import EmbeddingIndex


@pytest.fixture(scope="module")
def others(ws, tmp_path_factory):  # noqa: F811
    """Another base model of the same architecture, and another adapter on the right base."""
    root = tmp_path_factory.mktemp("others")
    tiny_vit(seed=1).save_pretrained(root / "other_base")
    config = QualityGatedLoraConfig(
        r=4, lora_alpha=4, lora_dropout=0.0, quality_estimator="resolution", gate_threshold=6.0, gate_temperature=2.0
    )
    model = get_peft_model(tiny_vit(), config)
    randomize_adapters(model, std=0.3, seed=7)  # ws's adapter has seed 1
    model.save_pretrained(root / "other_adapter")
    return root


def _embed(ws, out, model, *extra) -> EmbeddingIndex:  # noqa: F811
    assert cli("embed", "--model", model, "--images", ws / "probes", "--out", out, *extra) == 0
    return EmbeddingIndex.load(out)


def test_search_refuses_probes_of_another_base_model_or_adapter(ws, gate_index, others, tmp_path, capsys):  # noqa: F811
    gallery = ws / "gallery_gate.safetensors"
    _embed(ws, tmp_path / "other_base", others / "other_base", "--adapter", ws / "adapter")
    capsys.readouterr()
    assert cli("search", "--gallery", gallery, "--probes", tmp_path / "other_base.safetensors") == 2
    err = capsys.readouterr().err.strip()
    assert "different base models" in err and "\n" not in err
    _embed(ws, tmp_path / "other_adapter", ws / "base", "--adapter", others / "other_adapter")
    assert cli("search", "--gallery", gallery, "--probes", tmp_path / "other_adapter.safetensors") == 2
    assert "different adapters" in capsys.readouterr().err
    _embed(ws, tmp_path / "plain", ws / "base")  # the base alone against an adapter's gallery
    assert cli("search", "--gallery", gallery, "--probes", tmp_path / "plain.safetensors") == 2
    assert "different adapters" in capsys.readouterr().err
    # embedding now (--images) is checked the same way
    args = ["search", "--gallery", gallery, "--images", ws / "probes", "--model", others / "other_base"]
    assert cli(*args, "--adapter", ws / "adapter") == 2
    assert "different base models" in capsys.readouterr().err


def test_the_same_weights_elsewhere_and_in_another_dtype_are_accepted(ws, gate_index, tmp_path):  # noqa: F811
    shutil.copytree(ws / "base", tmp_path / "copy_of_base")
    shutil.copytree(ws / "adapter", tmp_path / "copy_of_adapter")
    args = ["--adapter", tmp_path / "copy_of_adapter", "--dtype", "bfloat16"]
    probes = _embed(ws, tmp_path / "p", tmp_path / "copy_of_base", *args)
    assert probes.info["weights"] == gate_index.info["weights"]
    assert cli("search", "--gallery", ws / "gallery_gate.safetensors", "--probes", tmp_path / "p.safetensors") == 0
    # proxy encoders exported from the adapter carry its fingerprint
    proxy = _embed(ws, tmp_path / "proxy", ws / "base", "--proxy-encoders", ws / "proxies", "--encoder", "probe")
    assert proxy.info["weights"] == gate_index.info["weights"]


def test_verify_refuses_a_report_of_another_model(ws, others, verification_report, capsys):  # noqa: F811
    report = json.loads(verification_report.read_text())
    assert report["model"]["weights"]["base_model"] and report["model"]["weights"]["adapter"]
    a, b = ws / "gallery" / "ada" / "0.png", ws / "gallery" / "bob" / "0.png"
    base = ["verify", "--report", verification_report, a, b]
    assert cli(*base, "--model", ws / "base", "--adapter", ws / "adapter") == 0
    capsys.readouterr()
    assert cli(*base, "--model", others / "other_base", "--adapter", ws / "adapter") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: the weight-loading progress bar
    assert err.startswith("petal-peft verify: error:") and "different base models" in err
    assert cli(*base, "--model", ws / "base", "--adapter", others / "other_adapter") == 2
    assert "different adapters" in capsys.readouterr().err


def test_old_indexes_without_fingerprints_get_a_clear_warning(ws, gate_index, tmp_path, caplog):  # noqa: F811
    for suffix in (".safetensors", ".json"):
        shutil.copy(ws / f"gallery_gate{suffix}", tmp_path / f"old{suffix}")
    document = json.loads((tmp_path / "old.json").read_text())
    del document["weights"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        assert cli("search", "--gallery", tmp_path / "old.safetensors", "--probes", tmp_path / "old.safetensors") == 0
    assert "did not record weight fingerprints" in caplog.text
