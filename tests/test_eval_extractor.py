"""The embedding extractor (flip fusion, batching, no grad) and the two ways to embed with a gated adapter."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from peft import get_peft_model
from testing_utils import LeftHalfBrightness, SigmoidGate, gated_tiny_vit, images, tiny_vit
from torch import nn

import petal_peft
from petal_peft import QualityGatedLoraConfig
from petal_peft.evaluation import (
    EmbeddingExtractor,
    gated_embedder,
    plain_embedder,
    pooled_embedding,
    proxy_embedder_from_adapter,
)
from petal_peft.evaluation.metrics import l2_normalize
from petal_peft.registry import QUALITY_ESTIMATORS, QUALITY_GATES

QUALITY_ESTIMATORS.register("eval_test_left_brightness", LeftHalfBrightness, overwrite=True)
QUALITY_GATES.register("eval_test_sigmoid", SigmoidGate, overwrite=True)


def left_quality(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3)) * 4)


def pooled(model, x, **kw):
    with torch.no_grad():
        return model(pixel_values=x, **kw).pooler_output


@pytest.fixture
def gated():
    return gated_tiny_vit("eval_test_left_brightness", "eval_test_sigmoid")


def test_pooled_embedding_sources():
    vit = tiny_vit()
    x = images(2)
    out = vit(pixel_values=x)
    torch.testing.assert_close(pooled_embedding(out), out.pooler_output)
    no_pool = T.ViTModel(vit.config, add_pooling_layer=False).eval()
    out2 = no_pool(pixel_values=x)
    assert out2.pooler_output is None
    torch.testing.assert_close(pooled_embedding(out2), out2.last_hidden_state[:, 0])
    t = torch.randn(2, 5)
    assert pooled_embedding(t) is t
    with pytest.raises(TypeError, match="cannot find an embedding"):
        pooled_embedding(object())


def test_flip_fusion_batched_and_without_grad():
    vit = tiny_vit()
    x = images(5)
    fused = EmbeddingExtractor(vit, batch_size=2, progress=False)(x)
    a, b = pooled(vit, x), pooled(vit, torch.flip(x, dims=[-1]))
    torch.testing.assert_close(fused.embeddings, l2_normalize(a + b))
    torch.testing.assert_close(fused.norms, (a + b).norm(dim=1))
    torch.testing.assert_close(fused.raw, a + b)
    assert not fused.embeddings.requires_grad and fused.quality is None
    single = EmbeddingExtractor(vit, flip=False, batch_size=3, progress=False)(x)
    torch.testing.assert_close(single.embeddings, l2_normalize(a))
    assert not torch.allclose(single.embeddings, fused.embeddings)


class RecordsQuality(nn.Module):
    """A stand-in gated model: records the quality it is given and lets it change the output."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.seen = []

    def forward(self, pixel_values, quality=None):
        self.seen.append(quality)
        return self.proj(pixel_values.mean(dim=(2, 3))) * (1 + quality[:, None])


def test_gate_mode_gives_the_flipped_copy_its_own_quality():
    model = RecordsQuality()
    x = images(4)
    emb = extractor_with_left_quality(model)(x)
    q, qf = left_quality(x), left_quality(torch.flip(x, dims=[-1]))
    assert not torch.allclose(q, qf)
    torch.testing.assert_close(emb.quality, q)
    torch.testing.assert_close(emb.quality_flipped, qf)
    torch.testing.assert_close(model.seen[0], q)
    torch.testing.assert_close(model.seen[1], qf)


def extractor_with_left_quality(model):
    return EmbeddingExtractor(model, quality_fn=left_quality, batch_size=8, progress=False)


def test_bad_quality_function_is_a_clear_error():
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        EmbeddingExtractor(RecordsQuality(), quality_fn=lambda x: torch.full((x.shape[0],), 2.0), progress=False)(
            images(2)
        )
    with pytest.raises(ValueError, match="returned shape"):
        EmbeddingExtractor(RecordsQuality(), quality_fn=lambda x: torch.ones(1), progress=False)(images(2))


def test_nan_embeddings_are_a_clear_error():
    class Broken(nn.Module):
        def forward(self, pixel_values):
            return torch.full((pixel_values.shape[0], 3), float("nan"))

    with pytest.raises(ValueError, match="NaN"):
        EmbeddingExtractor(Broken(), progress=False)(images(2))


def test_gate_mode_uses_the_adapters_estimator_per_image(gated):
    x = images(4)
    emb = gated_embedder(gated, batch_size=3, progress=False).embed(x, role="probe")
    tuner = gated.base_model
    q, qf = tuner.estimate_quality(x), tuner.estimate_quality(torch.flip(x, dims=[-1]))
    torch.testing.assert_close(emb.quality, q)
    torch.testing.assert_close(emb.quality_flipped, qf)
    # the same as letting the model compute its own quality per call
    expected = l2_normalize(pooled(gated, x) + pooled(gated, torch.flip(x, dims=[-1])))
    torch.testing.assert_close(emb.embeddings, expected)


def test_proxy_encoders_match_the_gate_at_its_ends_and_leave_the_adapter_untouched(gated):
    x = images(4)
    before = pooled(gated, x, quality=torch.full((4,), 0.3))
    proxy = proxy_embedder_from_adapter(gated, batch_size=4, progress=False)
    for role, q in (("gallery", 1.0), ("probe", 0.0)):
        got = proxy.embed(x, role=role)
        want = EmbeddingExtractor(gated, quality_fn=lambda t, q=q: torch.full((t.shape[0],), q), progress=False)(x)
        torch.testing.assert_close(got.embeddings, want.embeddings, atol=1e-5, rtol=1e-5)
        assert got.quality is None  # no quality estimation in proxy mode
    gallery, probe = proxy.embed(x, "gallery").embeddings, proxy.embed(x, "probe").embeddings
    assert not torch.allclose(gallery, probe, atol=1e-3)  # the two branches really differ
    torch.testing.assert_close(proxy.embed(x, "pair").embeddings, gallery)  # pairs: gallery encoder by default
    torch.testing.assert_close(pooled(gated, x, quality=torch.full((4,), 0.3)), before)
    assert isinstance(proxy.gallery.model, T.ViTModel)


def test_gate_mode_without_an_estimator_is_a_clear_error():
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=4, lora_alpha=4))
    with pytest.raises(ValueError, match="no quality estimator"):
        gated_embedder(model, progress=False)
    with pytest.raises(TypeError, match="PeftModel"):
        gated_embedder(tiny_vit(), progress=False)
    assert petal_peft.QualityGatedLoraConfig is QualityGatedLoraConfig


def test_plain_embedder_roles_are_the_same_model():
    vit = tiny_vit()
    emb = plain_embedder(vit, progress=False)
    x = images(2)
    torch.testing.assert_close(emb.embed(x, "gallery").embeddings, emb.embed(x, "probe").embeddings)
    with pytest.raises(ValueError, match="role"):
        emb.embed(x, "query")
