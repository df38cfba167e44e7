"""How the quality reaches the layers: validation, estimator hook point, scores, clear errors."""

import pytest
import torch
from peft import get_peft_model
from testing_utils import embedding, images, randomize_adapters, tiny_vit
from torch import nn

from petal_peft import QualityGatedLoraConfig
from petal_peft.registry import QUALITY_ESTIMATORS, QUALITY_GATES


class MeanBrightness(nn.Module):
    """Test estimator: the mean pixel value after undoing the normalisation."""

    higher_is_better = True

    def __init__(self, image_mean=None, image_std=None, offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.calls = 0

    def forward(self, pixel_values):
        self.calls += 1
        assert not torch.is_grad_enabled()
        return pixel_values.mean(dim=(1, 2, 3)) + self.offset


class ClampGate(nn.Module):
    def __init__(self, threshold, temperature, higher_is_better):
        super().__init__()
        self.threshold, self.temperature = threshold, temperature

    def forward(self, score):
        return ((score - self.threshold) / self.temperature + 0.5).clamp(0, 1)


QUALITY_ESTIMATORS.register("test_brightness", MeanBrightness, overwrite=True)
QUALITY_GATES.register("test_clamp", ClampGate, overwrite=True)


@pytest.fixture
def model():
    peft_model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0))
    randomize_adapters(peft_model)
    return peft_model


@pytest.mark.parametrize(
    "quality, error, match",
    [
        (torch.tensor([0.5, float("nan"), 0.5]), ValueError, "NaN"),
        (torch.tensor([0.5, 1.5, 0.5]), ValueError, r"\[0, 1\]"),
        (torch.tensor([-0.1, 0.5, 0.5]), ValueError, r"\[0, 1\]"),
        (torch.tensor([0.5, 0.5]), ValueError, "3 images"),
        (torch.tensor([1, 0, 1]), TypeError, "floating-point"),
        (torch.tensor([True, False, True]), TypeError, "boolean"),
        (torch.ones(3, 2), ValueError, "shape"),
        ("high", TypeError, "quality"),
    ],
)
def test_bad_quality_is_refused_with_a_message_naming_it(model, quality, error, match):
    with pytest.raises(error, match=match) as info:
        model(pixel_values=images(3), quality=quality)
    assert "quality" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_quality_on_another_device_is_refused(model):
    with pytest.raises(ValueError, match="quality"):
        model(pixel_values=images(3), quality=torch.ones(3, device="cuda"))


def test_missing_quality_without_estimator_names_quality(model):
    with pytest.raises(ValueError, match="quality"):
        model(pixel_values=images(3))


def test_misspelt_quality_keyword_is_not_silently_ignored(model):
    with pytest.raises(TypeError, match="quality"):
        model(pixel_values=images(3), qualty=torch.ones(3))


def test_scalar_and_list_quality_broadcast(model):
    x = images(3)
    reference = embedding(model(pixel_values=x, quality=torch.full((3,), 0.25)))
    torch.testing.assert_close(embedding(model(pixel_values=x, quality=0.25)), reference)
    torch.testing.assert_close(embedding(model(pixel_values=x, quality=[0.25, 0.25, 0.25])), reference)


def test_stale_quality_never_leaks_into_the_next_call(model):
    model(pixel_values=images(3), quality=torch.ones(3))
    with pytest.raises(ValueError, match="quality"):
        model(pixel_values=images(3))


def test_configured_estimator_computes_quality_once_per_forward():
    config = QualityGatedLoraConfig(
        lora_dropout=0.0,
        quality_estimator="test_brightness",
        gate_mode="test_clamp",
        gate_threshold=0.0,
        gate_temperature=4.0,
    )
    model = get_peft_model(tiny_vit(), config)
    randomize_adapters(model)
    x = images(3)
    expected_q = ((x.mean(dim=(1, 2, 3)) - 0.0) / 4.0 + 0.5).clamp(0, 1)
    automatic = embedding(model(pixel_values=x))
    torch.testing.assert_close(automatic, embedding(model(pixel_values=x, quality=expected_q)))
    assert model.base_model.quality_function().estimator.calls == 1
    torch.testing.assert_close(model.base_model.estimate_quality(x), expected_q)
    # raw scores through the configured gate
    scores = x.mean(dim=(1, 2, 3))
    torch.testing.assert_close(embedding(model(pixel_values=x, quality_score=scores)), automatic)


def test_estimator_follows_config_changes_such_as_calibration():
    config = QualityGatedLoraConfig(quality_estimator="test_brightness", gate_mode="test_clamp")
    model = get_peft_model(tiny_vit(), config)
    x = images(3)
    first = model.base_model.estimate_quality(x)
    model.peft_config["default"].gate_threshold = 0.4
    assert not torch.allclose(model.base_model.estimate_quality(x), first)


def test_unknown_estimator_name_is_a_clear_error_when_the_config_is_made():
    with pytest.raises(ValueError, match="'no_such_estimator' is not a registered quality estimator"):
        QualityGatedLoraConfig(quality_estimator="no_such_estimator")


def test_estimator_rejects_non_image_input():
    model = get_peft_model(
        tiny_vit(), QualityGatedLoraConfig(quality_estimator="test_brightness", gate_mode="test_clamp")
    )
    with pytest.raises(ValueError, match="pixel_values"):
        model.base_model.estimate_quality(torch.randn(2, 3, 32))
