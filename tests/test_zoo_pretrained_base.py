"""Tiny builds of the pretrained base: determinism, caching, the synthetic identities it trains on."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from petal_peft.zoo import pretrained_base as pb
from petal_peft.zoo.synthetic_identities import SyntheticIdentities

TINY = pb.PretrainSettings(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=16,
    patch_size=8,
    num_identities=6,
    images_per_identity=3,
    steps=2,
    batch_size=4,
    warmup_steps=1,
)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_is_deterministic_and_trains():
    a = pb.build_pretrained_base(TINY, progress=False)
    b = pb.build_pretrained_base(TINY, progress=False)
    assert _same(a, b)
    assert not _same(a, pb.random_init_base(TINY))  # training moved the weights
    c = pb.build_pretrained_base(dataclasses.replace(TINY, seed=1), progress=False)
    assert not _same(a, c)


def test_cache_second_call_loads_without_training(tmp_path, monkeypatch):
    model, proc = pb.get_pretrained_base(tmp_path, settings=TINY, progress=False)
    assert proc == {"image_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    assert model.pooler is not None and hasattr(model.pooler, "dense")
    dirs = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(dirs) == 1 and TINY.cache_key() in dirs[0].name

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(pb, "build_pretrained_base", boom)
    again, _ = pb.get_pretrained_base(tmp_path, settings=TINY, progress=False)
    assert _same(model, again)
    with pytest.raises(AssertionError, match="retrained"):
        pb.get_pretrained_base(tmp_path, settings=TINY, rebuild=True, progress=False)


def test_cache_dir_from_env_and_key_depends_on_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PETAL_PEFT_CACHE", str(tmp_path / "env"))
    assert pb.base_cache_dir() == tmp_path / "env"
    assert pb.base_cache_dir(tmp_path / "x") == tmp_path / "x"
    assert TINY.cache_key() != dataclasses.replace(TINY, steps=3).cache_key()
    assert TINY.cache_key() == dataclasses.replace(TINY).cache_key()


def test_settings_validation():
    with pytest.raises(ValueError, match="divisible"):
        pb.PretrainSettings(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        pb.PretrainSettings(image_size=50, patch_size=8)


def test_synthetic_identities_reproducible_and_grouping_independent():
    s = SyntheticIdentities(5, image_size=16, seed=2)
    ids, n = torch.tensor([0, 1, 4, 1]), torch.tensor([0, 0, 3, 7])
    x = s.render(ids, n)
    assert x.shape == (4, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(s.render(ids[2:3], n[2:3]), x[2:3])
    assert not torch.equal(x[1], x[3])  # same identity, different image: nuisance differs
    with pytest.raises(ValueError, match="identity indices"):
        s.render(torch.tensor([5]), torch.tensor([0]))
