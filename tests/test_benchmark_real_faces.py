"""The real-face benchmark source (LFW folds as identity groups) and the whole protocol on a tiny fake LFW.

The fake LFW is drawn here (coloured squares, one colour per person); the shared copy of the real faces is
only read by the tests marked skipif, which check the real split sizes the docs quote.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import FACES, HAVE_DLIB, REPO, fake_face_settings, make_fake_faces, needs_dlib, needs_faces

from petal_peft.benchmark import (
    IMAGE_PREPARATIONS,
    REFERENCE_MODELS,
    MethodSpec,
    format_table,
    plan_real_faces,
    real_face_settings,
    run_benchmark,
    write_outputs,
)
from petal_peft.benchmark.sources import DATA_SOURCES
from petal_peft.benchmark.sources.real_faces import kfold_pair_order
from petal_peft.data.lfw import LfwPair


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_fake_faces(tmp_path_factory.mktemp("faces"))


def test_groups_are_disjoint_and_splits_follow_the_protocol(faces):
    plan = plan_real_faces(fake_face_settings(faces))
    names = plan.identity_names()
    groups = list(names.values())
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # no name in two groups
    assert plan.groups.dropped == ["A_f0"] and "Newcomer" in names["base"]
    assert len(plan.adapt["B_f4"]) == 3 + 2  # LFW images + the extra set's, joined by name
    ev = plan.splits["eval"]
    # folds 0-2: per fold 3 probe identities (A, B, C), probes = 3 + 2 + 1, 2 single-image distractors
    assert ev.counts() == {
        "probes": 18,
        "probe_identities": 9,
        "gallery": 15,
        "gallery_distractors": 6,
        "pairs": 30,
        "genuine_pairs": 15,
        "sharp_images": 33,  # every image of the folds: each is a gallery entry or in a pair
    }
    # the gallery holds each identity's first image; its other images are the probes
    assert ev.sharp[ev.gallery_index[0]].name == "A_f0_0001.jpg" and ev.identities[0] == "A_f0"
    assert [p.name for p in ev.probes[:3]] == ["A_f0_0002.jpg", "A_f0_0003.jpg", "A_f0_0004.jpg"]
    assert {p.name.split("_")[1] for p in ev.sharp} == {"f0", "f1", "f2"}
    assert plan.splits["val"].counts()["pairs"] == 10 and plan.summary()["adapt"]["identities"] == 10
    few = plan_real_faces(fake_face_settings(faces, adapt_min_images=3))
    assert sorted(few.adapt) == ["A_f4", "A_f5", "B_f4", "B_f5"]


def test_kfold_order_balances_every_fold():
    pairs = [
        LfwPair(f, same, f"{f}{same}{i}a", f"{f}{same}{i}b") for f in range(3) for same in (1, 0) for i in range(20)
    ]
    ordered = kfold_pair_order(pairs, 10)
    assert sorted(ordered, key=id) == sorted(pairs, key=id)
    for chunk in np.array_split(np.arange(len(ordered)), 10):  # the folds kfold_verification_accuracy cuts
        members = [ordered[i] for i in chunk]
        assert sum(p.same for p in members) == len(members) // 2 == 6
        assert sorted({p.fold for p in members}) == [0, 1, 2]


def test_preparation_is_pluggable_and_runs_once_per_image(faces):
    calls = []

    def factory(image_size):
        def prepare(image):
            calls.append(image.size)
            return image.resize((image_size, image_size))

        return prepare

    IMAGE_PREPARATIONS.register("test-counting", factory, overwrite=True)
    data = DATA_SOURCES.get("real_faces")(fake_face_settings(faces, prepare="test-counting", calibration_images=8), 16)
    plan = plan_real_faces(fake_face_settings(faces))
    distinct = sum(len(v) for v in plan.adapt.values()) + sum(len(s.sharp) for s in plan.splits.values())
    assert len(calls) == distinct and set(calls) == {(40, 40)}
    ev = data.splits["eval"]
    assert ev.sharp.shape == (33, 3, 16, 16) and ev.probes.shape == (18, 3, 16, 16)
    assert data.real_faces and "research use only" in data.tag and "LFW" in data.terms
    assert data.calib_sharp.shape == data.calib_low.shape == (8, 3, 16, 16)
    # probes are degraded copies of the prepared images, not the sharp ones
    sharp_a2 = ev.sharp[[p.name for p in plan.splits["eval"].sharp].index("A_f0_0002.jpg")]
    assert (ev.probes[0].float() - sharp_a2.float()).abs().mean() > 1.0
    IMAGE_PREPARATIONS.register("test-wrong-size", lambda image_size: lambda im: im, overwrite=True)
    with pytest.raises(ValueError, match="returned 40x40, not 16"):
        DATA_SOURCES.get("real_faces")(fake_face_settings(faces, prepare="test-wrong-size"), 16)


PREPARED_IN: list[int] = []


def pid_recording_resize(image_size):
    """A module-level preparation factory: spawned workers unpickle it by name."""

    def prepare(image):
        PREPARED_IN.append(os.getpid())  # recorded in the process that prepares
        return image.resize((image_size, image_size))

    return prepare


@pytest.mark.slow
def test_parallel_preparation_gives_the_same_images(faces):
    pids = PREPARED_IN
    pids.clear()
    IMAGE_PREPARATIONS.register("test-pid", pid_recording_resize, overwrite=True)
    one = DATA_SOURCES.get("real_faces")(fake_face_settings(faces, prepare="test-pid", calibration_images=8), 16)
    assert len(pids) == 24 + 11 + 33 and set(pids) == {os.getpid()}  # every distinct file once
    two = DATA_SOURCES.get("real_faces")(
        fake_face_settings(faces, prepare="test-pid", calibration_images=8, num_threads=2), 16
    )
    assert len(pids) == 68  # the second time in worker processes: nothing prepared here
    for name in ("val", "eval"):
        assert torch.equal(one.splits[name].sharp, two.splits[name].sharp)
        assert torch.equal(one.splits[name].probes, two.splits[name].probes)
    assert torch.equal(one.calib_low, two.calib_low)


def test_bad_inputs_are_named(faces, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_real_faces(fake_face_settings(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="pairs_view2.csv"):
        plan_real_faces(fake_face_settings(tmp_path))
    listed = tmp_path / "base_identities.json"
    listed.write_text(json.dumps({"base_identities": ["Newcomer", "C_f1"]}))
    with pytest.raises(ValueError, match=r"eval group, e.g. \['C_f1'\]"):
        plan_real_faces(fake_face_settings(faces, base_identities=str(listed)))
    listed.write_text("Newcomer\nA_f7\n")
    plan_real_faces(fake_face_settings(faces, base_identities=str(listed)))  # base-fold names only: accepted
    with pytest.raises(ValueError, match="fold 3"):
        plan_real_faces(fake_face_settings(faces, eval_folds=(0, 3)))


class MeanColour:
    """A stand-in reference model: the mean colour of four quadrants."""

    description = "mean colour (test)"

    def __init__(self, num_workers: int = 1, progress: bool = False) -> None:
        self.seen = 0

    def embed(self, images, desc=""):
        self.seen += len(images)
        x = images.float() / 255
        h = x.shape[-1] // 2
        quads = [x[..., :h, :h], x[..., :h, h:], x[..., h:, :h], x[..., h:, h:]]
        return torch.cat([q.mean(dim=(-1, -2)) for q in quads], dim=1) - 0.5

    def stats(self):
        return {"images": self.seen}


@pytest.fixture(scope="module")
def run(faces, tmp_path_factory):
    REFERENCE_MODELS.register("test-mean", MeanColour, overwrite=True)
    out = tmp_path_factory.mktemp("run")
    s = fake_face_settings(faces, out, base="random", seeds=(0, 1), steps=2, batch_size=8, calibration_images=16)
    methods = [
        MethodSpec("pretrained", None),
        MethodSpec("full", "full"),
        MethodSpec("lora", "lora"),
        MethodSpec("ours", "quality_gated", ("gate", "proxy"), {"quality_source": "estimator"}, is_variant=True),
        MethodSpec("test-mean-reference", None, reference="test-mean"),
    ]
    results = run_benchmark(s, methods)
    files = write_outputs(results, out / "report", prefix="real_faces")
    return results, files, out


@pytest.mark.slow
def test_rows_seeds_and_paired_differences(run):
    results, _, _ = run
    rows = results["rows"]
    assert list(rows) == [
        "pretrained/plain",
        "full/plain",
        "lora/plain",
        "ours/gate",
        "ours/proxy",
        "test-mean-reference/plain",
    ]
    for row in rows.values():
        assert row["seeds"] == 2 and 0 <= row["eval/rank-1"][0] <= 100 and 0 <= row["eval/mAP"][0] <= 100
        assert 0 <= row["eval/hr_verification"][0] <= 100
    assert "val/rank-1" not in rows["full/plain"] and "val/rank-1" in rows["ours/proxy"]  # validation: variants
    ref = rows["test-mean-reference/plain"]
    assert "val/rank-1" not in ref and ref["eval/rank-1"][1] == 0.0  # not trained: one evaluation, eval only
    assert ref["reference_stats"]["images"] == 18 + 33  # the eval probes and sharp images, once
    assert rows["lora/plain"]["trainable_parameters"] == rows["ours/gate"]["trainable_parameters"] > 0
    assert results["selected_variant"] in ("ours/gate", "ours/proxy")
    assert "ours/gate - full: eval/hr_verification" in results["comparisons"]
    full = [r for r in results["runs"] if r["method"] == "full"]
    assert [r["seed"] for r in full] == [0, 1] and full[0]["final_loss"] != full[1]["final_loss"]
    assert results["data_summary"]["eval"]["pairs"] == 30 and results["real_faces"]


@pytest.mark.slow
def test_saved_models_reload_and_metrics_sit_next_to_them(run, faces):
    from peft import PeftModel
    from transformers import AutoModel

    import petal_peft  # noqa: F401

    results, _, out = run
    x = torch.randn(2, 3, 32, 32)
    base = AutoModel.from_pretrained(out / "base" / "random-base").eval()
    full = AutoModel.from_pretrained(out / "full" / "seed1").eval()
    ours = PeftModel.from_pretrained(AutoModel.from_pretrained(out / "base" / "random-base"), out / "ours" / "seed0")
    with torch.no_grad():
        assert (full(pixel_values=x).pooler_output - base(pixel_values=x).pooler_output).abs().max() > 0
        assert ours.eval()(pixel_values=x).pooler_output.shape == (2, 32)
    saved = json.loads((out / "ours" / "seed0" / "metrics.json").read_text())
    run0 = next(r for r in results["runs"] if r["method"] == "ours" and r["mode"] == "proxy" and r["seed"] == 0)
    assert saved["modes"]["proxy"]["eval"]["rank-1"] == run0["eval"]["rank-1"]
    assert set(saved["modes"]) == {"gate", "proxy"} and set(saved["modes"]["gate"]) == {"val", "eval"}
    assert (out / "pretrained" / "metrics.json").is_file() and (out / "test-mean-reference" / "metrics.json").is_file()
    # the prepared face images lived in <out>/work only while training
    images = [p for p in out.rglob("*") if p.suffix in (".jpg", ".png") and p.parent.name != "report"]
    assert not (out / "work").exists() and not images


@pytest.mark.slow
def test_resume_reads_finished_rows_back(run, faces):
    results, _, out = run
    s = fake_face_settings(
        faces, out, base="random", seeds=(0, 1), steps=2, batch_size=8, calibration_images=16, resume=True
    )
    methods = [MethodSpec("pretrained", None), MethodSpec("lora", "lora")]
    again = run_benchmark(s, methods)
    assert all(r.get("resumed") for r in again["runs"])
    for key in ("pretrained/plain", "lora/plain"):
        assert again["rows"][key]["eval/rank-1"] == results["rows"][key]["eval/rank-1"]
    changed = run_benchmark(dataclasses.replace(s, steps=3, seeds=(1,)), [MethodSpec("lora", "lora")])
    assert not any(r.get("resumed") for r in changed["runs"])  # other settings: trained again
    assert (
        json.loads((out / "lora" / "seed1" / "metrics.json").read_text())["fingerprint"]
        != again["runs"][-1]["fingerprint"]
    )


@pytest.mark.slow
def test_report_is_labelled_real_faces(run):
    results, files, _ = run
    assert {p.name for p in files} == {
        "real_faces_table.md",
        "real_faces_results.json",
        "real_faces_cmc.png",
        "real_faces_forgetting.png",
    }
    table = format_table(results)
    assert "research use only" in table and "LFW" in table and "not faces" not in table
    assert "| ours, best variant on validation" in table and "test-mean (reference, not trained)" in table
    assert "real faces" in results["data_tag"]


@needs_dlib
def test_dlib_reference_embeds_uint8_images():
    from petal_peft.benchmark import DlibFaceDescriptor

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    ref = DlibFaceDescriptor(progress=False)
    a, b = ref.embed(images), ref.embed(images)
    assert a.shape == (2, 128) and torch.isfinite(a).all() and torch.equal(a, b)
    assert ref.stats()["images"] == 4
    with pytest.raises(ValueError, match="uint8"):
        ref.embed(images.float())


def _load_cli():
    spec = importlib.util.spec_from_file_location("real_faces_cli", REPO / "benchmarks" / "real_faces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_split_and_one_line_errors(faces, tmp_path, capsys):
    cli = _load_cli()
    assert cli.main(["split", "--faces", str(faces), "--extra-sets", "extra"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["eval"]["probes"] == 18 and summary["groups"]["dropped_extra_identities"] == ["A_f0"]
    assert cli.main(["run", "--faces", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--base", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("real_faces.py run: error:") and err.count("\n") == 1
    assert cli.main(["run", "--faces", str(faces), "--out", str(REPO / "outputs" / "x"), "--base", "random"]) == 2
    assert "inside the repository" in capsys.readouterr().err
    # build-base: the base builder behind the same script, with the same one-line errors
    assert cli.main(["build-base", "--faces", str(tmp_path / "none"), "--out", str(tmp_path / "base")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("build-base: error:") and "lfw" in err and err.count("\n") == 1
    assert not (tmp_path / "base").exists()


@needs_faces
def test_shared_faces_split_matches_the_docs():
    plan = plan_real_faces(real_face_settings(str(FACES), "unused", progress=False))
    names = plan.identity_names()
    groups = list(names.values())
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    summary = plan.summary()
    assert summary["adapt"] == {"identities": 841, "images": 1502}
    assert summary["val"] == {
        "probes": 331,
        "probe_identities": 147,
        "gallery": 423,
        "gallery_distractors": 276,
        "pairs": 600,
        "genuine_pairs": 300,
        "sharp_images": 754,
    }
    assert summary["eval"] == {
        "probes": 1079,
        "probe_identities": 450,
        "gallery": 1241,
        "gallery_distractors": 791,
        "pairs": 1800,
        "genuine_pairs": 900,
        "sharp_images": 2320,
    }
    assert summary["groups"]["base"] == {"identities": 1782, "images": 5739}
    assert len(summary["groups"]["dropped_extra_identities"]) == 9
    glint = {p.name for p in (FACES / "glint_celeb24").iterdir() if p.is_dir()}
    # a Glint celebrity who is an LFW person of the validation/evaluation folds keeps only the LFW photos
    assert set(summary["groups"]["dropped_extra_identities"]) == glint & (names["val"] | names["eval"])
    for split in plan.splits.values():
        assert all(plan.lfw_root in p.parents for p in split.sharp + split.probes)
    same = np.asarray(plan.splits["eval"].same)
    assert all(same[i : i + 180].sum() == 90 for i in range(0, 1800, 180))  # the ten verification folds


def test_budget_estimate_is_consistent(faces, capsys):
    from petal_peft.benchmark.budget import RunCosts, estimate_runtime, steps_for_budget
    from petal_peft.benchmark.methods import select_methods

    s = fake_face_settings(faces, rows=("pretrained", "lora", "ours"), seeds=(0, 1, 2), flip_test=False)
    methods = select_methods(s)
    assert [m.name for m in methods] == ["pretrained", "lora", "ours"]
    costs = RunCosts(
        step_s={"lora": 2.0, "ours": 1.0},
        setup_s=5.0,
        image_s={"plain": 0.01, "lora": 0.02, "gate": 0.03, "proxy": 0.01},
    )
    counts = {"val": 100, "eval": 300, "data": 500}
    at10 = estimate_runtime(s, methods, costs, counts, steps=10)
    # 3 seeds x 2 rows x 5 s setup + 3 x 10 x (2 + 1); eval: base 300 x 0.01, LoRA 3 x 300 x 0.02 (no validation:
    # not a variant), ours 3 x 400 x (0.03 + 0.01)
    assert at10["train"] == 30 + 90 and at10["eval"] == 3 + 18 + 48
    fits = steps_for_budget(s, methods, costs, counts, seconds=1000.0)
    assert estimate_runtime(s, methods, costs, counts, fits)["total"] <= 1000.0
    assert estimate_runtime(s, methods, costs, counts, fits + 1)["total"] > 1000.0
    with pytest.raises(ValueError, match="unknown rows"):
        select_methods(fake_face_settings(faces, rows=("ourz",)))

    cli = _load_cli()
    args = ["budget", "--faces", str(faces), "--extra-sets", "extra", "--base", "random", "--references"]
    args += ["--prepare", "center-crop"]  # no face alignment: the test runs without the align extra too
    assert cli.main([*args, "--methods", "pretrained", "ours", "--batch-size", "4", "--minutes", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["costs"]["step_s"]) == {"ours"} and report["costs"]["image_s"]["gate"] > 0
    assert report["images"] == {"val": 6 + 11, "eval": 18 + 33, "data": 24 + 17 + 51}


@needs_dlib
def test_arcface_preparation_gives_the_base_size(faces):
    from petal_peft.benchmark import build_preparation

    with Image.open(faces / "lfw" / "A_f0" / "A_f0_0001.jpg") as im:
        out = build_preparation("arcface", 48)(im.convert("RGB"))  # no face in a coloured square: whole-image
    assert out.size == (48, 48) and out.mode == "RGB"


@pytest.mark.skipif(HAVE_DLIB, reason="the align extra is installed")
def test_arcface_preparation_names_what_is_missing():
    from petal_peft.benchmark import build_preparation

    with pytest.raises(ImportError, match=r"needs the `dlib` package.*pip install -e '\.\[align\]'"):
        build_preparation("arcface", 48)
