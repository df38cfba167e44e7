"""Margin heads: exact margin arithmetic, numerical safety, label checks, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from petal_peft.heads import (
    HEAD_CONFIG_NAME,
    HEAD_WEIGHTS_NAME,
    HEADS,
    AdaFaceHead,
    CombinedMarginHead,
    FaceHead,
    build_head,
    load_head,
)

D, C = 16, 5


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def _embeddings_at_angles(head: CombinedMarginHead | AdaFaceHead, labels: torch.Tensor, thetas: torch.Tensor):
    """Embeddings whose angle to their class centre is exactly ``thetas``."""
    w = _unit(head.weight.detach())
    centre = w[labels]
    g = torch.Generator().manual_seed(12345)  # not 0: torch.manual_seed(0) made the weights from that stream
    other = torch.randn(len(labels), head.embedding_size, generator=g)
    other = _unit(other - (other * centre).sum(1, keepdim=True) * centre)  # orthogonal to the centre
    return torch.cos(thetas)[:, None] * centre + torch.sin(thetas)[:, None] * other


def test_registry_names_and_types():
    assert {"arcface", "cosface", "adaface", "combined"} <= set(HEADS.names())
    arc = build_head("arcface", embedding_size=D, num_classes=C)
    cos = build_head("cosface", embedding_size=D, num_classes=C, m=0.35)
    ada = build_head("adaface", embedding_size=D, num_classes=C)
    assert isinstance(arc, CombinedMarginHead) and (arc.m1, arc.m2, arc.m3) == (1.0, 0.5, 0.0)
    assert isinstance(cos, CombinedMarginHead) and (cos.m1, cos.m2, cos.m3) == (1.0, 0.0, 0.35)
    assert isinstance(ada, AdaFaceHead) and ada.m == 0.4
    assert isinstance(arc.weight, torch.nn.Parameter) and arc.weight.shape == (C, D)
    with pytest.raises(KeyError, match="Unknown face-recognition head"):
        build_head("sphereface", embedding_size=D, num_classes=C)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"embedding_size": 0, "num_classes": C}, "embedding_size"),
        ({"embedding_size": D, "num_classes": 1}, "num_classes"),
        ({"embedding_size": D, "num_classes": C, "s": 0.0}, "scale s"),
        ({"embedding_size": D, "num_classes": C, "m1": 0.0}, "m1"),
        ({"embedding_size": D, "num_classes": C, "m2": 4.0}, "m2"),
        ({"embedding_size": D, "num_classes": C, "m3": float("nan")}, "m3"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        CombinedMarginHead(**kwargs)


def test_arcface_and_cosface_logits_match_the_formulas():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    thetas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 2.5])
    arc = build_head("arcface", embedding_size=D, num_classes=C, s=30.0, m=0.5)
    emb = _embeddings_at_angles(arc, labels, thetas) * 7.0  # norm must not matter
    logits = arc(emb, labels)
    plain = arc(emb)
    cos_all = _unit(emb) @ _unit(arc.weight.detach()).t()
    torch.testing.assert_close(plain, 30.0 * cos_all, atol=1e-4, rtol=0)
    target = logits.gather(1, labels[:, None]).squeeze(1) / 30.0
    torch.testing.assert_close(target, torch.cos(thetas + 0.5), atol=1e-4, rtol=0)
    mask = F.one_hot(labels, C).bool()
    torch.testing.assert_close(logits[~mask], plain[~mask])

    cosface = build_head("cosface", embedding_size=D, num_classes=C, s=30.0, m=0.4)
    cosface.weight.data.copy_(arc.weight.data)
    target = cosface(emb, labels).gather(1, labels[:, None]).squeeze(1) / 30.0
    torch.testing.assert_close(target, torch.cos(thetas) - 0.4, atol=1e-4, rtol=0)


@pytest.mark.parametrize("m1, m2, m3", [(1.0, 0.5, 0.0), (1.0, 0.8, 0.0), (1.35, 0.0, 0.0), (1.0, 0.3, 0.2)])
def test_target_logit_is_continuous_and_decreasing_in_theta(m1, m2, m3):
    head = CombinedMarginHead(D, C, m1=m1, m2=m2, m3=m3)
    theta = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    target = head.margin_target(torch.cos(theta).float()).double()
    steps = target[1:] - target[:-1]
    assert (steps <= 1e-6).all(), "target logit must never reward a larger angle"
    assert steps.abs().max() < 1e-3, "no jump where the fallback takes over"
    # Where m1 * theta + m2 < pi the exact margin curve is used (theta > 0.01: an fp32 cosine cannot resolve
    # smaller angles, 1 - theta^2 / 2 rounds to 1).
    inside = (m1 * theta + m2 < math.pi - 1e-3) & (theta > 0.01)
    expected = torch.cos(m1 * theta[inside] + m2) - m3
    torch.testing.assert_close(target[inside], expected, atol=2e-5, rtol=0)
    assert target[-1] < target[0]


def test_easy_margin_only_applies_for_positive_cosine():
    head = CombinedMarginHead(D, C, m2=0.5, easy_margin=True)
    cos_t = torch.tensor([[0.9], [0.1], [-0.2], [-0.9]])
    out = head.margin_target(cos_t)
    theta = torch.acos(cos_t)
    torch.testing.assert_close(out[:2], torch.cos(theta[:2] + 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2:], cos_t[2:])


@pytest.mark.parametrize("name, kw", [("arcface", {}), ("cosface", {}), ("combined", {"m1": 1.35}), ("adaface", {})])
def test_gradients_finite_at_cosine_plus_minus_one(name, kw):
    head = build_head(name, embedding_size=D, num_classes=C, **kw)
    w = head.weight.detach()
    # Exactly on the class centre, exactly opposite, and in between.
    emb = torch.stack([w[0] * 3.0, -w[1] * 0.5, w[2] + w[3]]).clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2])
    loss = F.cross_entropy(head(emb, labels), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["arcface", "adaface"])
def test_low_precision_inputs_computed_in_fp32(dtype, name):
    torch.manual_seed(1)
    head = build_head(name, embedding_size=D, num_classes=C).eval()
    emb = torch.randn(8, D) * 20
    labels = torch.arange(8) % C
    ref = head(emb, labels)
    low = head(emb.to(dtype), labels)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    # Only the input rounding differs: logits of scale 64 stay within ~64 * 1e-2.
    torch.testing.assert_close(low, ref, atol=64 * 1e-2, rtol=0)
    head_half = build_head(name, embedding_size=D, num_classes=C).to(dtype)
    out = head_half(emb.to(dtype), labels)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_label_checks():
    head = build_head("arcface", embedding_size=D, num_classes=C)
    emb = torch.randn(4, D)
    with pytest.raises(ValueError, match=r"shape \[batch, 16\]"):
        head(torch.randn(4, D + 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        head(emb, torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \[batch\] = \[4\]"):
        head(emb, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 5\).*\[5\]"):
        head(emb, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"\[-3\]"):
        head(emb, torch.tensor([0, -3, 1, 2]))
    with pytest.raises(TypeError, match="floating-point"):
        head(torch.ones(4, D, dtype=torch.long), torch.zeros(4, dtype=torch.long))


def test_ignore_index_gets_no_margin_and_is_ignored_by_the_loss():
    head = build_head("arcface", embedding_size=D, num_classes=C)
    emb = torch.randn(3, D)
    labels = torch.tensor([1, -100, 2])
    logits = head(emb, labels)
    torch.testing.assert_close(logits[1], head(emb)[1])
    assert not torch.allclose(logits[0], head(emb)[0])
    assert torch.isfinite(F.cross_entropy(logits, labels))


def test_adaface_margin_follows_feature_norm():
    head = AdaFaceHead(D, C, s=10.0, m=0.4, h=1.0).eval()
    head.batch_mean.fill_(10.0)
    head.batch_std.fill_(1.0)
    labels = torch.tensor([0, 1, 2])
    thetas = torch.tensor([0.8, 0.8, 0.8])
    unit = _embeddings_at_angles(head, labels, thetas)
    norms = torch.tensor([1.0, 10.0, 30.0])  # z clipped to -1, exactly 0, clipped to +1
    target = head(unit * norms[:, None], labels).gather(1, labels[:, None]).squeeze(1) / 10.0
    expected = torch.stack(
        [
            torch.cos(thetas[0] + 0.4),  # low quality: ArcFace
            torch.cos(thetas[1]) - 0.4,  # average: CosFace
            torch.cos(thetas[2] - 0.4) - 0.8,  # high quality: cos(theta - m) - 2m
        ]
    )
    torch.testing.assert_close(target, expected, atol=1e-4, rtol=0)


def test_adaface_running_statistics_update_only_in_training():
    head = AdaFaceHead(D, C, t_alpha=0.5)
    emb = torch.randn(6, D) * 4
    labels = torch.arange(6) % C
    norms = emb.norm(dim=1)
    head.eval()
    head(emb, labels)
    assert head.batch_mean.item() == pytest.approx(20.0) and head.batch_std.item() == pytest.approx(100.0)
    head.train()
    head(emb, labels)
    assert head.batch_mean.item() == pytest.approx(0.5 * 20 + 0.5 * norms.mean().item(), rel=1e-5)
    assert head.batch_std.item() == pytest.approx(0.5 * 100 + 0.5 * norms.std().item(), rel=1e-5)
    assert "batch_mean" in head.state_dict() and "batch_std" in head.state_dict()


@pytest.mark.parametrize("name", ["arcface", "cosface", "adaface", "combined"])
def test_save_and_load_roundtrip(tmp_path, name):
    torch.manual_seed(2)
    head = build_head(name, embedding_size=D, num_classes=C, s=32.0)
    if isinstance(head, AdaFaceHead):
        head.train()(torch.randn(8, D), torch.arange(8) % C)  # move the buffers off their defaults
    head.eval()
    head.save_pretrained(tmp_path / "head")
    files = sorted(p.name for p in (tmp_path / "head").iterdir())
    assert files == sorted([HEAD_CONFIG_NAME, HEAD_WEIGHTS_NAME]), files  # no temp or pickle files left
    loaded = type(head).from_pretrained(tmp_path / "head").eval()
    again = load_head(tmp_path / "head").eval()
    emb, labels = torch.randn(4, D), torch.tensor([0, 1, 2, 3])
    for other in (loaded, again):
        assert type(other) is type(head)
        torch.testing.assert_close(other(emb, labels), head(emb, labels), atol=0, rtol=0)
        for k, v in head.state_dict().items():
            torch.testing.assert_close(other.state_dict()[k], v, atol=0, rtol=0)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=HEAD_CONFIG_NAME):
        FaceHead.from_pretrained(tmp_path)
    build_head("adaface", embedding_size=D, num_classes=C).save_pretrained(tmp_path / "ada")
    with pytest.raises(TypeError, match="AdaFaceHead"):
        CombinedMarginHead.from_pretrained(tmp_path / "ada")
    # A config that no longer matches the weights is refused, not silently reshaped.
    build_head("arcface", embedding_size=D, num_classes=C).save_pretrained(tmp_path / "arc")
    cfg = (tmp_path / "arc" / HEAD_CONFIG_NAME).read_text().replace('"num_classes": 5', '"num_classes": 6')
    (tmp_path / "arc" / HEAD_CONFIG_NAME).write_text(cfg)
    with pytest.raises(ValueError, match="shape"):
        load_head(tmp_path / "arc")


@pytest.fixture()
def one_thread():
    """Tiny matmuls: several OpenMP threads only spin against each other on a busy 2-core box (100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_heads_learn_a_separable_toy_problem(one_thread):
    torch.manual_seed(3)
    centres = _unit(torch.randn(C, D))
    labels = torch.randint(0, C, (200,))
    emb = centres[labels] + 0.1 * torch.randn(200, D)
    for name in ("arcface", "cosface", "adaface"):
        head = build_head(name, embedding_size=D, num_classes=C, s=16.0)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        first = None
        for _ in range(60):
            loss = F.cross_entropy(head(emb, labels), labels)
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = (head.eval()(emb).argmax(1) == labels).float().mean().item()
        assert loss.item() < 0.5 * first, name
        assert acc > 0.95, (name, acc)
