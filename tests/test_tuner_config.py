"""Config: refused options, peft_type, unknown fields, JSON round-trip."""

import json

import pytest
from peft import PeftConfig
from peft.utils import PeftType

from petal_peft import QualityGatedLoraConfig


@pytest.mark.parametrize(
    "option",
    [
        {"use_dora": True},
        {"lora_bias": True},
        {"target_parameters": ["weight"]},
        {"init_lora_weights": "pissa"},
        {"init_lora_weights": "olora"},
        {"init_lora_weights": "loftq"},
        {"layer_replication": [(0, 1)]},
        {"dropout_position": "output"},
        {"gate_temperature": 0.0},
        {"image_std": [0.5, 0.0, 0.5]},
    ],
)
def test_options_the_method_cannot_honour_are_refused(option):
    with pytest.raises((ValueError, TypeError)) as info:
        QualityGatedLoraConfig(**option)
    assert any(word in str(info.value) for word in list(option) + ["init_lora_weights"])


def test_estimator_must_be_a_name():
    with pytest.raises(TypeError, match="quality_estimator"):
        QualityGatedLoraConfig(quality_estimator=lambda x: x)


def test_peft_type_is_ours_not_lora():
    config = QualityGatedLoraConfig()
    assert config.peft_type == PeftType.QUALITY_GATED_LORA
    assert config.r == 8 and config.lora_alpha == 8 and config.init_lora_weights == "gaussian"


def test_config_round_trip(tmp_path):
    config = QualityGatedLoraConfig(
        r=4,
        lora_alpha=8,
        quality_estimator="resolution",
        gate_threshold=0.3,
        gate_temperature=0.05,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        target_modules=["q_proj"],
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "QUALITY_GATED_LORA" and saved["gate_threshold"] == 0.3
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, QualityGatedLoraConfig)
    assert loaded.gate_settings() == config.gate_settings()
    assert "import petal_peft" in (tmp_path / "README.md").read_text()


def test_unknown_saved_field_is_an_error_not_a_warning(tmp_path):
    QualityGatedLoraConfig(target_modules=["q_proj"]).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    data = json.loads(path.read_text())
    data["gate_future_option"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="gate_future_option"):
        PeftConfig.from_pretrained(tmp_path)
