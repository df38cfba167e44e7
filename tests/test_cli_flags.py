"""Every command passes its flags on to the library under the keyword the library expects (the flag tables and
namespace helpers of ``petal_peft.cli.common``): the library calls are replaced by recorders, nothing is loaded.

Each table row: the words on the command line, the library's keyword, the value it must receive."""

from __future__ import annotations

import json
import shlex
import types

import pytest
import torch

from petal_peft.cli import main

ALIGN = [
    ("--size 96", "size", 96),
    ("--template dlib", "template", "dlib"),
    ("--padding 0.5", "padding", 0.5),
    ("--margin 4", "margin", 4),
    ("--fallback skip", "fallback", "skip"),
    ("--workers 3", "workers", 3),
    ("--jpeg-quality 80", "jpeg_quality", 80),
    ("--overwrite", "overwrite", True),
    ("--no-progress", "progress", False),
]
ALIGN_DEFAULTS = dict(size=112, template="arcface", padding=0.25, margin=0, fallback="whole-image", workers=1)
ALIGN_DEFAULTS.update(jpeg_quality=95, overwrite=False, progress=True)
CALIBRATE = [
    ("--gate-mode linear", "gate_mode", "linear"),
    ("--max-images 7", "max_images", 7),
    ("--degrade-min-size 5", "min_size", 5),
    ("--degrade-max-size 9", "max_size", 9),
    ("--seed 3", "seed", 3),
    ("--image-size 64", "image_size", 64),
    ("--dry-run", "write", False),
]
#: the flags that choose and run the embedding network, the same for embed / search / verify and eval
EMBEDDER = [
    ("--adapter a", "adapter", "a"),
    ("--quality-estimator resolution", "quality_estimator", "resolution"),
    ("--quality-estimator-kwargs '{\"k\": 1}'", "quality_estimator_kwargs", {"k": 1}),
    ("--no-flip", "flip", False),
    ("--batch-size 8", "batch_size", 8),
]
ENCODER = [
    ("--encoder gallery", "encoder", "gallery"),
    ("--device cpu", "device", "cpu"),
    ("--dtype float16", "dtype", "float16"),
    ("--image-size 32 --image-mean 0.5 --image-std 0.25", "image_size", 32),
    ("", "image_mean", [0.5]),
    ("", "image_std", [0.25]),
]
READING = [
    ("--num-workers 1", "num_workers", 1),
    ("--no-progress", "progress", False),
    ("--skip-corrupt-images", "skip_bad_images", True),
    ("", "align", False),
]


def _argv(*tables) -> list[str]:
    return [word for table in tables for words, _, _ in table for word in shlex.split(words)]


def _kwargs(*tables, **renamed) -> dict:
    return {renamed.get(keyword, keyword): value for table in tables for _, keyword, value in table}


class _Stop(Exception):
    """Raised by a recorder to end the command once the call it records is made (not a user error: it propagates)."""


def _recorder(calls: list, result=None, stop: bool = False):
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        if stop:
            raise _Stop
        return result

    return record


@pytest.mark.parametrize("given", [True, False], ids=["given", "defaults"])
def test_align_passes_every_alignment_flag_on(monkeypatch, tmp_path, given):
    import petal_peft.align.folder

    calls: list = []
    report = types.SimpleNamespace(summary=lambda: "aligned")
    monkeypatch.setattr(petal_peft.align.folder, "align_folder", _recorder(calls, report))
    assert main(["align", "src", "--out", str(tmp_path / "dst"), *(_argv(ALIGN) if given else [])]) == 0
    assert calls == [(("src", str(tmp_path / "dst")), _kwargs(ALIGN) if given else ALIGN_DEFAULTS)]


def test_calibrate_passes_the_fit_flags_under_the_library_names(monkeypatch, capsys):
    import petal_peft.training.gate_calibration as gate_calibration

    calls: list = []
    gate = {"gate_threshold": 0.5, "previous": {"gate_threshold": 0.1, "gate_temperature": 1.0}}
    monkeypatch.setattr(gate_calibration, "calibrate_adapter", _recorder(calls, gate))
    estimator = EMBEDDER[1:3]
    argv = ["calibrate", "--model", "m", "--adapter", "a", "--images", "imgs", *_argv(CALIBRATE, estimator)]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == gate
    assert calls == [(("m", "a", "imgs"), _kwargs(CALIBRATE, estimator))]


def test_embed_passes_the_encoder_and_reading_flags_on(monkeypatch, tmp_path):
    import petal_peft.inference

    encoders: list = []
    folders: list = []
    encoder = object()
    monkeypatch.setattr(petal_peft.inference, "build_face_encoder", _recorder(encoders, encoder))
    monkeypatch.setattr(petal_peft.inference, "embed_folder", _recorder(folders, stop=True))
    out = str(tmp_path / "x.safetensors")
    argv = ["embed", "--model", "m", "--images", "imgs", "--out", out, *_argv(EMBEDDER, ENCODER, READING)]
    with pytest.raises(_Stop):
        main([*argv, "--chunk-size", "16", "--restart"])
    assert encoders == [(("m",), dict(_kwargs(EMBEDDER, ENCODER), proxy_encoders=None))]
    assert folders == [(("imgs", out, encoder), dict(_kwargs(READING), chunk_size=16, overwrite=False, restart=True))]


def test_search_embeds_probes_with_the_reading_flags(monkeypatch):
    import petal_peft.inference

    probes: list = []
    gallery = types.SimpleNamespace(info={})
    monkeypatch.setattr(petal_peft.inference.EmbeddingIndex, "load", staticmethod(lambda path: gallery))
    monkeypatch.setattr(petal_peft.inference, "build_face_encoder", _recorder([], "encoder"))
    monkeypatch.setattr(petal_peft.inference, "embed_images", _recorder(probes, stop=True))
    with pytest.raises(_Stop):
        main(["search", "--gallery", "g", "--images", "probes", "--model", "m", *_argv(EMBEDDER, READING)])
    assert probes == [(("probes", "encoder"), _kwargs(READING))]


def test_eval_passes_the_embedder_flags_under_the_builder_names(monkeypatch, tmp_path):
    import petal_peft.embedding.loading
    import petal_peft.evaluation

    builds: list = []
    monkeypatch.setattr(petal_peft.embedding.loading, "load_base_model", lambda name, dtype: torch.nn.Linear(2, 2))
    monkeypatch.setattr(petal_peft.evaluation, "build_embedders", _recorder(builds, stop=True))
    argv = ["eval", "--model", "m", "--benchmark", "verification", "--data", "d", "--out", str(tmp_path / "r")]
    argv += [*_argv(EMBEDDER), "--num-workers", "1", "--no-progress", "--device", "cpu"]
    with pytest.raises(_Stop):
        main([*argv, "--modes", "gate", "plain", "--pair-role", "probe"])
    (base,), kwargs = builds[0]
    assert isinstance(base, torch.nn.Linear)
    expected = _kwargs(EMBEDDER, adapter="adapter_path")
    expected.update(proxy_encoders_path=None, modes=["gate", "plain"], pair_role="probe", num_workers=1)
    assert kwargs == dict(expected, device=torch.device("cpu"), progress=False)


def test_verify_embeds_the_pair_images_with_the_reading_flags(monkeypatch, tmp_path):
    import petal_peft.inference

    embedded: list = []
    encoder = types.SimpleNamespace(info={})
    monkeypatch.setattr(petal_peft.inference, "build_face_encoder", _recorder([], encoder))
    monkeypatch.setattr(petal_peft.inference, "embed_paths", _recorder(embedded, stop=True))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    argv = ["verify", str(a), str(b), "--model", "m", "--threshold", "1.0", "--num-workers", "2", "--no-progress"]
    with pytest.raises(_Stop):
        main(argv)
    assert embedded == [(([str(a), str(b)], encoder), {"align": False, "num_workers": 2, "progress": False})]
