"""The opt-in unbounded quality path (the reference's unclamped gate) and the recorded score direction."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from tiny_models import images, randomize_adapters, tiny_vit

from petal_peft import QualityGatedLoraConfig
from petal_peft.quality import UnclampedLinearGate, build_gate


def gated(**config):
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(target_modules=["q_proj", "v_proj"], **config))
    randomize_adapters(model)
    return model.eval()


def embed(model, **kwargs):
    with torch.no_grad():
        return model(pixel_values=images(2), **kwargs).pooler_output


def test_quality_outside_unit_interval_is_refused_by_default():
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\].*allow_unbounded_quality=True"):
        embed(gated(), quality=torch.tensor([1.5, 0.2]))


def test_opted_in_adapter_extrapolates_linearly_in_quality():
    model = gated(allow_unbounded_quality=True)
    first = model.base_model.model.layers[0].attention.q_proj  # its input does not depend on q
    seen = []
    first.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))
    for q in (0.0, 1.0, 10.5):
        embed(model, quality=torch.full((2,), q))
    at_0, at_1, far = seen
    torch.testing.assert_close(far, at_0 + 10.5 * (at_1 - at_0), rtol=1e-4, atol=1e-4)
    assert (far - at_1).abs().max() > 1e-2  # not clamped to 1


def test_unclamped_gate_needs_the_opt_in_and_follows_the_score_direction():
    gate = build_gate("linear_unclamped", threshold=30.0, higher_is_better=False)
    assert isinstance(gate, UnclampedLinearGate) and not gate.bounded
    # BRISQUE (lower is better): q = 0.5 - (score - 30) = 1 - alpha of the reference
    torch.testing.assert_close(gate(torch.tensor([20.0, 30.0, 40.5])), torch.tensor([10.5, 0.5, -10.0]))
    with pytest.raises(ValueError, match="opt in with QualityGatedLoraConfig\\(allow_unbounded_quality=True\\)"):
        embed(gated(gate_mode="linear_unclamped", gate_threshold=30.0), quality_score=torch.tensor([20.0, 40.0]))
    lower = gated(
        gate_mode="linear_unclamped", gate_threshold=30.0, allow_unbounded_quality=True, score_higher_is_better=False
    )
    torch.testing.assert_close(
        embed(lower, quality_score=torch.tensor([20.0, 40.0])), embed(lower, quality=torch.tensor([10.5, -9.5]))
    )


def test_score_direction_is_recorded_and_an_estimator_keeps_its_own():
    lower = gated(score_higher_is_better=False, gate_threshold=0.0, gate_temperature=1.0)
    higher = gated(gate_threshold=0.0, gate_temperature=1.0)
    scores = torch.tensor([2.0, -2.0])
    torch.testing.assert_close(embed(lower, quality_score=scores), embed(higher, quality_score=-scores))
    # with an estimator (BRISQUE: lower is better) the estimator's direction applies whatever the field says
    for declared in (None, True):
        config = QualityGatedLoraConfig(
            target_modules=["q_proj"], quality_estimator="brisque", score_higher_is_better=declared
        )
        gate = get_peft_model(tiny_vit(), config).base_model._build_gate(
            config, type("E", (), {"higher_is_better": False})
        )
        assert gate.higher_is_better is False
    with pytest.raises(TypeError, match="score_higher_is_better"):
        QualityGatedLoraConfig(score_higher_is_better="no")


def test_gate_mode_evaluation_runs_an_opted_in_unclamped_adapter():
    """Evaluation's gate mode passes the adapter's own unbounded quality through (a converted released model run
    as it was trained), and still refuses out-of-range quality for a bounded adapter."""
    from petal_peft.embedding.extractor import EmbeddingExtractor, gated_embedder

    model = gated(
        quality_estimator="resolution",
        gate_mode="linear_unclamped",
        gate_threshold=-5.0,
        allow_unbounded_quality=True,
    )
    out = gated_embedder(model, progress=False, flip=False).extractor("probe")(images(2))
    assert out.quality.min() > 1.0  # far above the threshold: the unclamped rule goes past 1
    torch.testing.assert_close(out.embeddings, torch.nn.functional.normalize(embed(model), dim=1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        EmbeddingExtractor(gated(), quality_fn=lambda x: torch.full((x.shape[0],), 1.5), progress=False)(images(2))
