"""One embedder builder for every caller: the mode words, the estimator override and each mode's network."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from tiny_models import images, randomize_adapters, tiny_vit

import petal_peft  # noqa: F401
from petal_peft import QualityGatedLoraConfig
from petal_peft.embedding import (
    MODES,
    build_embedder,
    canonical_mode,
    gate_settings,
    load_base_model,
    read_image_settings,
    with_quality_estimator,
)
from petal_peft.evaluation import build_embedders


@pytest.fixture
def gated():
    config = QualityGatedLoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, quality_estimator="resolution")
    model = get_peft_model(tiny_vit(), config)
    randomize_adapters(model)
    return model.eval()


def test_mode_words_and_aliases():
    assert MODES == ("gate", "proxy", "gallery", "probe", "plain")
    assert [canonical_mode(w) for w in ("hq", "lq", "gated", "base", "proxy")] == [
        "gallery",
        "probe",
        "gate",
        "plain",
        "proxy",
    ]
    with pytest.raises(ValueError, match="unknown embedding mode 'sharp'"):
        canonical_mode("sharp")


def test_quality_estimator_override_is_a_copy():
    settings = {"quality_estimator": "resolution", "quality_estimator_kwargs": {}, "gate_threshold": 0.3}
    out = with_quality_estimator(settings, "brisque", {"k": 1})
    assert out == {"quality_estimator": "brisque", "quality_estimator_kwargs": {"k": 1}, "gate_threshold": 0.3}
    assert settings["quality_estimator"] == "resolution"
    assert with_quality_estimator(None, None) is None
    assert with_quality_estimator(None, "resolution")["quality_estimator"] == "resolution"


def test_gate_settings_override(gated):
    assert gate_settings(gated)["quality_estimator"] == "resolution"
    assert gate_settings(gated, "brisque")["quality_estimator"] == "brisque"


def test_single_encoder_modes_match_the_merged_adapter(gated):
    x = images(3)
    kwargs = {"flip": False, "progress": False}
    gallery = build_embedder("gallery", gated, **kwargs).embed(x, role="probe").embeddings
    probe = build_embedder("lq", gated, **kwargs).embed(x, role="gallery").embeddings
    proxy = build_embedder("proxy", gated, **kwargs)
    torch.testing.assert_close(gallery, proxy.embed(x, role="gallery").embeddings)
    torch.testing.assert_close(probe, proxy.embed(x, role="probe").embeddings)
    assert not torch.allclose(gallery, probe, atol=1e-4)  # the two branches differ
    plain = build_embedder("plain", tiny_vit(), **kwargs).embed(x).embeddings  # the same base weights, no adapter
    assert not torch.allclose(plain, gallery, atol=1e-4)


def test_modes_need_their_inputs():
    with pytest.raises(ValueError, match="gate mode needs an adapter"):
        build_embedder("gate", None)
    with pytest.raises(ValueError, match="probe mode needs an adapter"):
        build_embedder("probe", None)


def test_eval_builder_accepts_the_new_words(gated, tmp_path):
    gated.save_pretrained(tmp_path / "adapter")
    embedders, settings = build_embedders(
        tiny_vit(), adapter_path=str(tmp_path / "adapter"), modes=["hq", "plain"], flip=False, progress=False
    )
    assert list(embedders) == ["gallery", "plain"] and settings["quality_estimator"] == "resolution"
    with pytest.raises(ValueError, match="unknown embedding modes"):
        build_embedders(tiny_vit(), modes=["sharp"])


def test_one_loader_for_the_shipped_base_and_folders(tmp_path):
    base = load_base_model(None, progress=False)
    assert not base.training
    info = read_image_settings(None)
    assert info.image_size == base.config.image_size
    tiny_vit().save_pretrained(tmp_path / "vit")
    assert read_image_settings(tmp_path / "vit", image_size=48).image_size == 48
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_base_model(tmp_path / "empty")
