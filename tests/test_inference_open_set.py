"""Open-set search (--threshold, or the threshold of an evaluation report) and --json on search, verify, eval."""

from __future__ import annotations

import json

import pytest
from testing_utils import cli

from petal_peft.cli import main


def _search_json(ws, capsys, *extra):
    code = cli(
        "search", "--gallery", ws / "gallery_gate.safetensors", "--images", ws / "probes",
        "--model", ws / "base", "--adapter", ws / "adapter", "--json", *extra,
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out), captured.err  # stdout holds the JSON document alone


def test_search_threshold_answers_unknown_below_it(ws, gate_index, capsys):
    closed, _ = _search_json(ws, capsys)
    best = sorted(r["matches"][0]["score"] for r in closed["results"])
    assert closed["threshold"] is None and all(r["answer"] == r["matches"][0]["identity"] for r in closed["results"])
    threshold = (best[1] + best[2]) / 2  # two probes fall below it
    result, err = _search_json(ws, capsys, "--threshold", threshold)
    assert result["threshold"] == pytest.approx(threshold)
    for r in result["results"]:
        top = r["matches"][0]
        assert r["answer"] == (top["identity"] if top["score"] >= threshold else "unknown")
    assert sum(r["answer"] == "unknown" for r in result["results"]) == 2 and "2 answered unknown" in err
    dir_rate = 100 * sum(r["answer"] == r["probe_identity"] for r in result["results"]) / 4
    assert result["rates_percent"]["DIR"] == pytest.approx(dir_rate)


def test_search_takes_its_threshold_from_an_eval_report(ws, gate_index, verification_report, capsys):
    report = json.loads(verification_report.read_text())
    result, _ = _search_json(ws, capsys, "--report", verification_report)
    assert result["threshold"] == pytest.approx(1 - report["results"]["gate"]["threshold"] / 2)
    assert "mode gate" in result["threshold_source"]
    given, _ = _search_json(ws, capsys, "--report", verification_report, "--threshold", 0.5)
    assert given["threshold"] == 0.5  # the flag wins over the report


def test_search_threshold_out_of_range_is_one_line(ws, gate_index, capsys):
    code = cli("search", "--gallery", ws / "gallery_gate.safetensors", "--probes", ws / "gallery_gate.safetensors",
               "--threshold", 3)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cosine similarity in [-1, 1]" in err


def test_verify_json(ws, gate_index, verification_report, capsys):
    code = cli("verify", "--report", verification_report, "--embeddings", ws / "gallery_gate.safetensors",
               "--pairs", ws / "gallery" / "pairs.txt", "--json")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    assert len(result["pairs"]) == 12 and "accuracy_percent" in result and "threshold" in captured.err


def test_eval_json(ws, tmp_path, capsys):
    code = main(
        ["eval", "--model", str(ws / "base"), "--adapter", str(ws / "adapter"), "--benchmark", "verification"]
        + ["--data", str(ws / "gallery" / "pairs.txt"), "--out", str(tmp_path / "r"), "--modes", "gate"]
        + ["--no-plots", "--no-progress", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["benchmark"] == "verification" and "accuracy" in report["results"]["gate"]
