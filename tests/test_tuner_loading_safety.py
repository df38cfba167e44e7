"""Broken or foreign adapter folders and proxy exports give one clear error naming the folder and the problem;
proxy exports never delete what they did not write, and are refused for another base model or adapter."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from testing_utils import randomize_adapters, tiny_vit

import petal_peft
from petal_peft import QualityGatedLoraConfig
from petal_peft.cli import main as cli_main
from petal_peft.evaluation import build_embedders
from petal_peft.tuner import check_proxy_encoders, load_quality_gated_adapter
from petal_peft.tuner.proxy import PROXY_EXPORT_RECORD


def _adapter(path, seed: int = 1, **config):
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0, r=4, lora_alpha=4, **config))
    randomize_adapters(model, seed=seed)
    model.save_pretrained(path)
    return model


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# ---- 6. adapter configs ------------------------------------------------------------------------------------
def test_plain_lora_adapter_where_a_gated_one_is_expected(tmp_path):
    _adapter(tmp_path / "a")
    _edit_config(tmp_path / "a", peft_type="LORA")
    with pytest.raises(ValueError, match=r"holds a 'LORA' adapter .* not a quality-gated adapter"):
        load_quality_gated_adapter(tiny_vit(), tmp_path / "a")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gate_mode": "nope"}, "`gate_mode` 'nope' is not a registered quality gate"),
        ({"quality_estimator": "os.system"}, "`quality_estimator` 'os.system' is not a registered"),
        ({"quality_estimator": "resolution", "quality_estimator_kwargs": {"nope": 1}}, "do not fit"),
        ({"gate_temperature": -1}, "gate_temperature"),
    ],
)
def test_unknown_gate_or_estimator_is_refused_at_load_not_at_forward(tmp_path, change, message):
    _adapter(tmp_path / "a")
    _edit_config(tmp_path / "a", **change)
    with pytest.raises(ValueError, match=message):
        PeftModel.from_pretrained(tiny_vit(), tmp_path / "a")  # PEFT's own loader, through our config
    with pytest.raises(ValueError, match=message):
        QualityGatedLoraConfig(**{k: v for k, v in change.items()})


# ---- 9. damaged adapter folders ----------------------------------------------------------------------------
def test_folder_without_weights(tmp_path):
    _adapter(tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors are missing"):
        load_quality_gated_adapter(tiny_vit(), tmp_path / "a")


def test_truncated_weights(tmp_path):
    _adapter(tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors is damaged or truncated"):
        load_quality_gated_adapter(tiny_vit(), tmp_path / "a")


def test_rank_edited_against_the_weights(tmp_path):
    _adapter(tmp_path / "a")
    _edit_config(tmp_path / "a", r=8, lora_alpha=8)
    for load in (PeftModel.from_pretrained, load_quality_gated_adapter):  # PEFT's loader too, via our tuner hook
        with pytest.raises(ValueError, match=r"shape \(4, 32\) in the file, but the adapter config \(r=8\)"):
            load(tiny_vit(), tmp_path / "a")


def test_missing_folder_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_quality_gated_adapter(tiny_vit(), str(tmp_path / "nope" / "adapter"))


def test_eval_cli_reports_a_damaged_adapter_in_one_line(tmp_path, capsys):
    tiny_vit().save_pretrained(tmp_path / "base")
    _adapter(tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    code = cli_main(
        ["eval", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "a"), "--benchmark", "tinyface"]
        + ["--data", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    ours = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("petal-peft")]
    assert code == 2 and len(ours) == 1 and "damaged or truncated" in ours[0] and "Traceback" not in err, err


# ---- 4. exporting into an existing folder -------------------------------------------------------------------
def test_export_keeps_user_files_and_refuses_foreign_encoder_folders(tmp_path):
    model = _adapter(tmp_path / "a")
    out = tmp_path / "encoders"
    (out / "gallery_encoder").mkdir(parents=True)
    (out / "gallery_encoder" / "mine.txt").write_text("not yours")
    (out / "notes.txt").write_text("mine too")
    with pytest.raises(FileExistsError, match="did not export"):
        petal_peft.export_proxy_encoders(model, out)
    assert (out / "gallery_encoder" / "mine.txt").read_text() == "not yours"
    (out / "gallery_encoder" / "mine.txt").unlink()
    (out / "gallery_encoder").rmdir()
    petal_peft.export_proxy_encoders(model, out)
    petal_peft.export_proxy_encoders(model, out)  # our own previous export is replaced
    assert (out / "notes.txt").read_text() == "mine too"
    assert sorted(p.name for p in out.iterdir()) == [
        "gallery_encoder",
        "notes.txt",
        PROXY_EXPORT_RECORD,
        "probe_encoder",
    ]
    assert json.loads((out / PROXY_EXPORT_RECORD).read_text())["complete"] is True


# ---- 5. proxy encoders checked against --model / --adapter ------------------------------------------------
@pytest.fixture
def exported(tmp_path):
    model = _adapter(tmp_path / "a")
    petal_peft.export_proxy_encoders(model, tmp_path / "encoders")
    return tmp_path


def test_encoders_of_another_base_model_are_refused(exported):
    with pytest.raises(ValueError, match="not exported from this base model"):
        build_embedders(tiny_vit(seed=7), proxy_encoders_path=str(exported / "encoders"), modes=["proxy"])
    embedders, _ = build_embedders(tiny_vit(), proxy_encoders_path=str(exported / "encoders"), modes=["proxy"])
    assert list(embedders) == ["proxy"]


def test_encoders_of_another_adapter_are_refused(exported):
    _adapter(exported / "other", seed=5)
    with pytest.raises(ValueError, match="not merged from this adapter"):
        build_embedders(
            tiny_vit(), adapter_path=str(exported / "other"), proxy_encoders_path=str(exported / "encoders")
        )
    build_embedders(tiny_vit(), adapter_path=str(exported / "a"), proxy_encoders_path=str(exported / "encoders"))


def test_encoders_without_export_record_are_refused(exported):
    (exported / "encoders" / PROXY_EXPORT_RECORD).unlink()
    with pytest.raises(ValueError, match="no petal_peft_proxy_export.json"):
        build_embedders(tiny_vit(), proxy_encoders_path=str(exported / "encoders"), modes=["proxy"])


def test_encoders_in_reduced_precision_match_their_base(exported):
    from transformers import AutoModel

    folder = exported / "encoders"
    gallery, probe = (AutoModel.from_pretrained(folder / name) for name in ("gallery_encoder", "probe_encoder"))
    check_proxy_encoders(exported / "encoders", gallery, probe, base_model=tiny_vit().to(torch.bfloat16))


def test_interrupted_export_is_refused_until_exported_again(exported, monkeypatch):
    from petal_peft.tuner import proxy

    real_save = proxy._save_atomic

    def crash_on_probe(model, directory):
        if directory.name == "probe_encoder":
            raise KeyboardInterrupt("killed while exporting")
        real_save(model, directory)

    model = PeftModel.from_pretrained(tiny_vit(), exported / "a")
    monkeypatch.setattr(proxy, "_save_atomic", crash_on_probe)
    with pytest.raises(KeyboardInterrupt):
        petal_peft.export_proxy_encoders(model, exported / "encoders")
    monkeypatch.setattr(proxy, "_save_atomic", real_save)
    with pytest.raises(ValueError, match="was interrupted; export it again"):
        build_embedders(tiny_vit(), proxy_encoders_path=str(exported / "encoders"), modes=["proxy"])
    petal_peft.export_proxy_encoders(model, exported / "encoders")
    build_embedders(tiny_vit(), proxy_encoders_path=str(exported / "encoders"), modes=["proxy"])
