"""save_pretrained / from_pretrained round trips, Hub-id loading from a local cache, key checks."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from testing_utils import embedding, images, randomize_adapters, tiny_vit

from petal_peft import QualityGatedLoraConfig

HERE = os.path.dirname(__file__)


def saved_adapter(path, **config):
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0, **config))
    randomize_adapters(model)
    model.save_pretrained(path)
    return model


@pytest.mark.slow
def test_round_trip_in_a_fresh_process_gives_identical_outputs(tmp_path):
    model = saved_adapter(tmp_path / "adapter")
    x, q = images(3), torch.tensor([0.0, 0.4, 1.0])
    torch.save({"x": x, "q": q}, tmp_path / "inputs.pt")
    expected = embedding(model(pixel_values=x, quality=q))
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {HERE!r})
        import petal_peft
        from peft import PeftModel
        from testing_utils import tiny_vit, embedding
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        model = PeftModel.from_pretrained(tiny_vit(), {str(tmp_path / "adapter")!r})
        out = embedding(model(pixel_values=inputs["x"], quality=inputs["q"]))
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected, rtol=0, atol=0)


def test_saved_files_are_safetensors_with_both_branches(tmp_path):
    saved_adapter(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert any("lora_A_lq" in k for k in keys) and any(".lora_A.weight" in k for k in keys)
    assert isinstance(PeftConfig.from_pretrained(tmp_path), QualityGatedLoraConfig)


def test_load_by_hub_id_from_local_cache_offline(tmp_path, monkeypatch):
    model = saved_adapter(tmp_path / "adapter")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--petal--tiny-adapter"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tmp_path / "adapter", snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = PeftModel.from_pretrained(tiny_vit(), "petal/tiny-adapter")
    x, q = images(2), torch.tensor([0.2, 0.7])
    torch.testing.assert_close(
        embedding(loaded(pixel_values=x, quality=q)), embedding(model(pixel_values=x, quality=q))
    )


def test_missing_adapter_keys_are_an_error(tmp_path):
    saved_adapter(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    weights = load_file(path)
    dropped = next(k for k in weights if "lora_B_lq" in k)
    del weights[dropped]
    save_file(weights, path)
    with pytest.raises(ValueError, match="missing"):
        PeftModel.from_pretrained(tiny_vit(), tmp_path)


def test_unexpected_adapter_keys_are_an_error(tmp_path):
    saved_adapter(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    weights = load_file(path)
    weights["base_model.model.layers.0.attention.o_proj.lora_A.weight"] = torch.zeros(8, 32)
    save_file(weights, path)
    with pytest.raises(ValueError, match="unexpected"):
        PeftModel.from_pretrained(tiny_vit(), tmp_path)


def test_adapter_for_another_architecture_is_refused(tmp_path):
    saved_adapter(tmp_path, target_modules=["q_proj", "k_proj", "v_proj"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj"]  # the weights still hold k/v branches
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unexpected"):
        PeftModel.from_pretrained(tiny_vit(), tmp_path)


@pytest.mark.slow
def test_without_import_peft_fails_with_keyerror_and_card_says_what_to_do(tmp_path):
    saved_adapter(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {HERE!r})
        from peft import PeftModel
        from testing_utils import tiny_vit
        try:
            PeftModel.from_pretrained(tiny_vit(), {str(tmp_path)!r})
        except KeyError as error:
            print("KeyError", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "QUALITY_GATED_LORA" in result.stdout
    card = (tmp_path / "README.md").read_text()
    assert "pip install -e ." in card and "import petal_peft" in card
    assert "petal-peft" in card.split("---")[1]  # tag in the YAML front matter
