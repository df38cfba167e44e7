"""The pretrained base: shipped weights, deterministic tiny builds, caching, disjoint identity groups."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from petal_peft.data.synthetic_identities import SyntheticIdentities
from petal_peft.recipes import synthetic_base as pb

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
    margin_warmup_steps=1,
)


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_is_deterministic_and_trains():
    log: list[float] = []
    a = pb.build_pretrained_base(TINY, progress=False, loss_log=log)
    b = pb.build_pretrained_base(TINY, progress=False)
    assert _same(a, b)
    assert len(log) == TINY.steps and all(torch.isfinite(torch.tensor(log)))
    assert not _same(a, pb.random_init_base(TINY))  # training moved the weights
    c = pb.build_pretrained_base(dataclasses.replace(TINY, seed=1), progress=False)
    assert not _same(a, c)


def test_shipped_weights_load_as_fp32_with_expected_config(monkeypatch, tmp_path):
    path = pb.shipped_base_dir()
    assert (path / "model.safetensors").stat().st_size < 4 * 2**20
    meta = json.loads((path / "petal_base.json").read_text())
    default = pb.PretrainSettings()
    assert meta["settings"] == default.to_dict() and meta["cache_key"] == default.cache_key()
    assert meta["training_identities"]["identity_range"] == [0, default.num_identities]

    def boom(*a, **k):
        raise AssertionError("trained although the weights ship with the package")

    monkeypatch.setattr(pb, "build_pretrained_base", boom)
    monkeypatch.setenv("PETAL_PEFT_CACHE", str(tmp_path))
    model, proc = pb.get_pretrained_base(progress=False)
    assert not any(tmp_path.iterdir())  # nothing built or cached
    assert proc == default.processor_settings()
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.patch_size) == (
        default.hidden_size,
        default.num_hidden_layers,
        default.image_size,
        default.patch_size,
    )
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert hasattr(model.pooler, "dense") and not model.training
    # the weights are trained, not a fresh init of the same config
    assert not _same(model, pb.random_init_base(default))
    x = torch.rand(2, 3, default.image_size, default.image_size)
    emb = pb.embed(model, pb.normalize_pixels(x))
    assert emb.shape == (2, default.hidden_size) and torch.isfinite(emb).all()


def test_shipped_folder_loads_with_plain_transformers():
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(pb.shipped_base_dir())
    ours, _ = pb.load_base_dir(pb.shipped_base_dir())
    assert next(model.parameters()).dtype == torch.float32
    assert _same(model, ours)
    proc = AutoImageProcessor.from_pretrained(pb.shipped_base_dir())
    assert list(proc.image_mean) == list(pb.IMAGE_MEAN)


def test_rebuilding_shipped_settings_is_deterministic_on_tiny_step_count():
    short = dataclasses.replace(pb.PretrainSettings(), steps=2, batch_size=8, num_identities=16, images_per_identity=2)
    a = pb.build_pretrained_base(short, progress=False)
    b = pb.build_pretrained_base(short, progress=False)
    assert _same(a, b)


def test_rebuild_and_settings_change_go_to_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETAL_PEFT_CACHE", str(tmp_path))
    model, proc = pb.get_pretrained_base(settings=TINY, progress=False)
    assert proc == {"image_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    assert model.pooler is not None and hasattr(model.pooler, "dense")
    dirs = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(dirs) == 1 and TINY.cache_key() in dirs[0].name

    calls = []
    real_build = pb.build_pretrained_base

    def counting(*a, **k):
        calls.append(1)
        return real_build(*a, **k)

    monkeypatch.setattr(pb, "build_pretrained_base", counting)
    again, _ = pb.get_pretrained_base(settings=TINY, progress=False)
    assert calls == [] and _same(model, again)  # cached: no training
    rebuilt, _ = pb.get_pretrained_base(settings=TINY, rebuild=True, progress=False)
    assert calls == [1] and _same(model, rebuilt)  # rebuilt deterministically (fp16 storage both times)


def test_cache_dir_from_env_and_key_depends_on_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PETAL_PEFT_CACHE", str(tmp_path / "env"))
    assert pb.base_cache_dir() == tmp_path / "env"
    assert pb.base_cache_dir(tmp_path / "x") == tmp_path / "x"
    assert TINY.cache_key() != dataclasses.replace(TINY, steps=3).cache_key()
    assert TINY.cache_key() == dataclasses.replace(TINY).cache_key()


def test_load_base_dir_rejects_foreign_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="petal_base.json"):
        pb.load_base_dir(tmp_path)


def test_settings_validation():
    with pytest.raises(ValueError, match="divisible"):
        pb.PretrainSettings(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        pb.PretrainSettings(image_size=50, patch_size=8)
    with pytest.raises(ValueError, match="adapt/eval"):
        pb.PretrainSettings(num_identities=pb.ADAPT_FIRST_ID + 1)


def test_identity_groups_are_disjoint_and_pretrain_is_what_the_base_saw():
    g = pb.synthetic_identity_groups()
    sets = [set(g.pretrain), set(g.adapt), set(g.eval)]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    meta = json.loads((pb.shipped_base_dir() / "petal_base.json").read_text())
    assert [g.pretrain.start, g.pretrain.stop] == meta["training_identities"]["identity_range"]
    pop = g.population(16)
    assert pop.num_identities >= g.eval.stop and pop.seed == meta["training_identities"]["population_seed"]
    # identity i renders identically whatever the population size: groups mean the same glyphs everywhere
    ids, n = torch.tensor([3, g.pretrain.stop - 1]), torch.tensor([0, 5])
    assert torch.equal(pop.render(ids, n), SyntheticIdentities(g.pretrain.stop, 16, pop.seed).render(ids, n))


def test_synthetic_identities_reproducible_and_grouping_independent():
    s = SyntheticIdentities(5, image_size=16, seed=2)
    ids, n = torch.tensor([0, 1, 4, 1]), torch.tensor([0, 0, 3, 7])
    x = s.render(ids, n)
    assert x.shape == (4, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(s.render(ids[2:3], n[2:3]), x[2:3])
    assert not torch.equal(x[1], x[3])  # same identity, different image: nuisance differs
    with pytest.raises(ValueError, match="identity indices"):
        s.render(torch.tensor([5]), torch.tensor([0]))
