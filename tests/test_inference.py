"""petal-peft embed / search / verify end to end, on a tiny ViT and small generated images (no face data)."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import IMAGE, cli

from petal_peft import merged_encoder
from petal_peft.evaluation import ImageTransform, fuse_flip, pooled_embedding
from petal_peft.export import load_adapter
from petal_peft.inference import EmbeddingIndex, build_face_encoder, embed_folder


def load_images(root, files) -> torch.Tensor:
    transform = ImageTransform(size=(IMAGE, IMAGE))
    return torch.stack([transform(Image.open(os.path.join(root, f))) for f in files])


def peft_model(ws):
    return load_adapter(tiny_vit_from(ws), ws / "adapter")


def tiny_vit_from(ws):
    from transformers import AutoModel

    return AutoModel.from_pretrained(ws / "base").eval()


@torch.no_grad()
def flip_fused(model, x, **kwargs) -> torch.Tensor:
    a = pooled_embedding(model(pixel_values=x, **kwargs))
    b = pooled_embedding(model(pixel_values=torch.flip(x, dims=[-1]), **kwargs))
    return fuse_flip(a, b)[0]


def test_embed_gate_is_the_tuners_own_gated_flip_fused_embedding(ws, gate_index):
    index = gate_index
    assert index.files == sorted(index.files) and len(index) == 9
    assert dict(zip(index.files, index.identities))["dee/session1/1.png"] == "dee"
    assert dict(zip(index.files, index.identities))["loner.png"] == "loner"
    assert index.info["encoder"] == "gate" and index.info["flip_test"] is True
    assert set(index.quality) == {"quality_score", "quality_score_flipped", "gate", "gate_flipped"}
    torch.testing.assert_close(index.embeddings.norm(dim=1), torch.ones(9))
    model = peft_model(ws)
    x = load_images(ws / "gallery", index.files)
    # without quality=, the tuner estimates each image's quality itself (the mirrored copy too)
    torch.testing.assert_close(index.embeddings, flip_fused(model, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(index.quality["gate"], model.base_model.estimate_quality(x), atol=1e-6, rtol=0)
    assert 0 < float(index.quality["gate"].min()) < float(index.quality["gate"].max()) < 1
    document = json.loads((ws / "gallery_gate.json").read_text())
    assert document["identity_names"] == ["ada", "bob", "cy", "dee", "loner"]
    assert document["quality"]["settings"]["quality_estimator"] == "resolution"


def test_embed_with_exported_proxy_encoders(ws, tmp_path):
    out = tmp_path / "probe_enc"
    args = ["embed", "--model", ws / "base", "--images", ws / "probes", "--out", out]
    assert (
        cli(*args, "--proxy-encoders", ws / "proxies", "--encoder", "probe", "--quality-estimator", "resolution") == 0
    )
    index = EmbeddingIndex.load(tmp_path / "probe_enc.safetensors")
    x = load_images(ws / "probes", index.files)
    torch.testing.assert_close(index.embeddings, flip_fused(merged_encoder(peft_model(ws), 0.0), x), atol=1e-5, rtol=0)
    # scores recorded; no gate values without the adapter's calibrated gate
    assert set(index.quality) == {"quality_score", "quality_score_flipped"}
    assert index.info["encoder"] == "probe"


def test_embed_resumes_an_interrupted_run(ws, tmp_path, gate_index):
    encoder = build_face_encoder(ws / "base", adapter=ws / "adapter", batch_size=2)
    calls = {"n": 0}
    real = encoder.embed_batch

    def interrupted(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(batch)

    encoder.embed_batch = interrupted
    out = tmp_path / "g.safetensors"
    with pytest.raises(KeyboardInterrupt):
        embed_folder(ws / "gallery", out, encoder, chunk_size=4, progress=False)
    parts = tmp_path / "g.safetensors.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["chunk-000000.safetensors", "run.json"]
    assert not out.exists()
    calls["n"] = -100  # no more interruptions; count the batches the rerun needs
    index = embed_folder(ws / "gallery", out, encoder, chunk_size=4, progress=False)
    assert calls["n"] == -100 + 3  # chunk 1 (2 batches of 2) and chunk 2 (1 image); chunk 0 was kept
    assert not parts.exists()
    torch.testing.assert_close(index.embeddings, gate_index.embeddings, atol=1e-6, rtol=0)
    torch.testing.assert_close(EmbeddingIndex.load(out).quality["gate"], gate_index.quality["gate"])
    # a finished index is not overwritten by accident
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        embed_folder(ws / "gallery", out, encoder, chunk_size=4, progress=False)


def test_interrupted_run_with_other_settings_is_not_mixed(ws, tmp_path):
    out = tmp_path / "x.safetensors"
    encoder = build_face_encoder(ws / "base", adapter=ws / "adapter", batch_size=2)
    real = encoder.embed_batch

    def fail_second(batch, state={"n": 0}):  # noqa: B006 - a call counter
        state["n"] += 1
        if state["n"] == 3:
            raise KeyboardInterrupt
        return real(batch)

    encoder.embed_batch = fail_second
    with pytest.raises(KeyboardInterrupt):
        embed_folder(ws / "gallery", out, encoder, chunk_size=4, progress=False)
    other = build_face_encoder(ws / "base", adapter=ws / "adapter", encoder="gallery", batch_size=2)
    with pytest.raises(ValueError, match=r"other settings .*--restart"):
        embed_folder(ws / "gallery", out, other, chunk_size=4, progress=False)
    index = embed_folder(ws / "gallery", out, other, chunk_size=4, progress=False, restart=True)
    assert index.info["encoder"] == "gallery"


def test_index_files_that_do_not_belong_together_are_refused(gate_index, tmp_path):
    gate_index.save(tmp_path / "a")
    gate_index.save(tmp_path / "b")
    (tmp_path / "b.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="does not belong"):
        EmbeddingIndex.load(tmp_path / "b.json")
    assert len(EmbeddingIndex.load(tmp_path / "a.json")) == 9
    with pytest.raises(FileNotFoundError, match="petal-peft embed writes"):
        EmbeddingIndex.load(tmp_path / "missing.safetensors")


def test_search_ranks_identities_by_their_best_gallery_image(ws, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    base = ["--model", ws / "base", "--adapter", ws / "adapter"]
    assert cli("embed", *base, "--encoder", "gallery", "--images", ws / "gallery", "--out", gallery) == 0
    out = tmp_path / "results.json"
    assert (
        cli(
            "search",
            "--gallery",
            tmp_path / "gallery.safetensors",
            "--images",
            ws / "probes",
            *base,
            "--encoder",
            "probe",
            "--top-k",
            3,
            "--out",
            out,
        )
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["num_probes"] == 4 and result["num_mated_probes"] == 4 and result["top_k"] == 3
    g = EmbeddingIndex.load(tmp_path / "gallery.safetensors")
    p = flip_fused(
        merged_encoder(peft_model(ws), 0.0),
        load_images(
            ws / "probes",
            sorted(
                os.path.relpath(os.path.join(d, f), ws / "probes") for d, _, fs in os.walk(ws / "probes") for f in fs
            ),
        ),
    )
    scores = (p @ g.embeddings.T).numpy()
    rank1 = 0
    for row, entry in enumerate(result["results"]):
        best = {}
        for j, name in enumerate(g.identities):
            best[name] = max(best.get(name, -2.0), float(scores[row, j]))
        expected = sorted(best, key=best.get, reverse=True)[:3]
        assert [m["identity"] for m in entry["matches"]] == expected
        for m in entry["matches"]:
            assert m["score"] == pytest.approx(best[m["identity"]], abs=1e-5)
            assert g.identities[g.files.index(m["gallery_file"])] == m["identity"]
        rank1 += expected[0] == entry["probe_identity"]
    assert result["rates_percent"]["rank-1"] == pytest.approx(100.0 * rank1 / 4)
    assert "rank-1" in printed


def test_verify_two_images_with_the_reports_threshold(ws, gate_index, verification_report, capsys):
    report = json.loads(verification_report.read_text())
    threshold = report["results"]["gate"]["threshold"]
    a, b = ws / "gallery" / "ada" / "0.png", ws / "gallery" / "bob" / "0.png"
    assert (
        cli("verify", "--report", verification_report, "--model", ws / "base", "--adapter", ws / "adapter", a, b) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"threshold {threshold:.4g} (squared L2") and "mode gate" in out[0]
    decision, distance = out[1].split("\t")[:2]
    e = gate_index.embeddings
    expected = float(((e[gate_index.row_of("ada/0.png")] - e[gate_index.row_of("bob/0.png")]) ** 2).sum())
    assert float(distance) == pytest.approx(expected, abs=1e-4)
    assert decision == ("same" if expected < threshold else "different")


def test_verify_pairs_from_an_index(ws, gate_index, verification_report, tmp_path, capsys):
    out = tmp_path / "decisions.json"
    pairs = ws / "gallery" / "pairs.txt"
    assert (
        cli(
            "verify",
            "--report",
            verification_report,
            "--embeddings",
            ws / "gallery_gate.safetensors",
            "--pairs",
            pairs,
            "--out",
            out,
        )
        == 0
    )
    decisions = json.loads(out.read_text())
    threshold = json.loads(verification_report.read_text())["results"]["gate"]["threshold"]
    assert decisions["threshold"] == threshold and len(decisions["pairs"]) == 12
    for pair in decisions["pairs"]:
        assert pair["same"] == (pair["distance"] < threshold)
    truth = [line.split()[2] == "1" for line in pairs.read_text().splitlines()]
    accuracy = 100 * np.mean([p["same"] == t for p, t in zip(decisions["pairs"], truth)])
    assert decisions["accuracy_percent"] == pytest.approx(accuracy)
    assert f"accuracy {accuracy:.2f}%" in capsys.readouterr().out


def test_verify_refuses_a_threshold_that_does_not_apply(ws, verification_report, tmp_path, capsys):
    # probe-encoder embeddings vs a proxy threshold measured with the gallery encoder on both sides
    probe_index = tmp_path / "probe"
    assert (
        cli(
            "embed",
            "--model",
            ws / "base",
            "--adapter",
            ws / "adapter",
            "--encoder",
            "probe",
            "--images",
            ws / "gallery",
            "--out",
            probe_index,
        )
        == 0
    )
    pairs = ws / "gallery" / "pairs.txt"
    args = ["verify", "--embeddings", tmp_path / "probe.safetensors", "--pairs", pairs, "--report"]
    assert cli(*args, verification_report) == 2
    assert "measured with the gallery encoder" in capsys.readouterr().err
    # a report without a verification threshold
    tinyface = tmp_path / "tinyface_report.json"
    tinyface.write_text(json.dumps({"benchmark": "tinyface", "results": {"gate": {"rank-1": 50.0}}}))
    assert cli(*args, tinyface) == 2
    assert "only 1:1 verification reports record a threshold" in capsys.readouterr().err
    # other preprocessing than the report's
    assert (
        cli(
            "verify",
            "--report",
            verification_report,
            "--model",
            ws / "base",
            "--adapter",
            ws / "adapter",
            "--image-mean",
            "0.4",
            "--pairs",
            pairs,
        )
        == 2
    )
    assert "mean" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("petal_peft.align") is not None, reason="the align extra is present")
def test_align_without_the_extra_is_one_clear_line(ws, tmp_path, capsys):
    args = ["embed", "--model", ws / "base", "--images", ws / "probes", "--out", tmp_path / "x", "--align"]
    assert cli(*args) == 2
    err = capsys.readouterr().err  # fails before the model is loaded: nothing else on stderr
    assert "pip install -e '.[align]'" in err and err.count("\n") == 1


def test_embed_errors_are_one_line(ws, tmp_path, capsys):
    assert (
        cli(
            "embed",
            "--model",
            ws / "base",
            "--proxy-encoders",
            ws / "proxies",
            "--images",
            ws / "probes",
            "--out",
            tmp_path / "x",
        )
        == 2
    )
    assert "--encoder gallery or probe" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli("embed", "--model", ws / "base", "--images", tmp_path / "empty", "--out", tmp_path / "x") == 2
    assert "contains no images" in capsys.readouterr().err
    wrong = tmp_path / "swin"
    from testing_utils import tiny_model

    tiny_model("swin").save_pretrained(wrong)
    assert (
        cli("embed", "--model", wrong, "--adapter", ws / "adapter", "--images", ws / "probes", "--out", tmp_path / "x")
        == 2
    )
    assert "trained on a ViTModel" in capsys.readouterr().err.splitlines()[-1]


def test_index_files_are_saved_whole(gate_index, tmp_path):
    tensors, document = gate_index.save(tmp_path / "sub" / "g")
    assert tensors.is_file() and document.is_file()
    assert [p.name for p in (tmp_path / "sub").iterdir() if p.name.startswith(".")] == []  # no temporary left
