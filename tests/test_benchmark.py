"""End-to-end check of the low-resolution benchmark pipeline (tiny random base, one seed, a few steps).

Asserts structure and ranges only: a random base and six steps say nothing about which method is better.
"""

from __future__ import annotations

import json
import math

import pytest

from petal_peft.benchmark import MethodSpec, format_table, quick_settings, run_benchmark, write_outputs

pytestmark = pytest.mark.slow  # runs the benchmark end to end (trains every method)


def _methods():
    return [
        MethodSpec("pretrained", None),
        MethodSpec("full", "full"),
        MethodSpec("lora", "lora"),
        MethodSpec("ours", "quality_gated", ("gate", "proxy"), {"quality_source": "estimator"}, is_variant=True),
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    s = quick_settings(
        str(out),
        progress=False,
        adapt_identities=8,
        adapt_images=4,
        eval_identities=6,
        distractor_identities=4,
        val_identities=4,
        steps=3,
        batch_size=8,
    )
    res = run_benchmark(s, _methods())
    files = write_outputs(res, out / "report", out / "docs")
    return res, files, out


def test_rows_metrics_and_parameters(results):
    res, _, _ = results
    rows = res["rows"]
    assert list(rows) == ["pretrained/plain", "full/plain", "lora/plain", "ours/gate", "ours/proxy"]
    for row in rows.values():
        for split in ("val", "eval"):
            for metric in ("rank-1", "rank-5", "rank-10", "rank-20", "hr_verification"):
                mean, std = row[f"{split}/{metric}"]
                assert 0.0 <= mean <= 100.0 and std == 0.0  # one seed
            cmc = row[f"{split}/cmc"]
            assert all(a <= b + 1e-9 for a, b in zip(cmc, cmc[1:])) and 0 <= cmc[0] <= 100
    assert rows["pretrained/plain"]["trainable_parameters"] == 0
    assert rows["pretrained/plain"]["eval/delta_rank-1"] == (0.0, 0.0)
    assert rows["lora/plain"]["trainable_parameters"] == rows["ours/gate"]["trainable_parameters"] > 0
    assert math.isclose(rows["full/plain"]["trainable_percent"], 100.0)
    assert rows["ours/gate"]["file_bytes"] > 0 and rows["full/plain"]["file_bytes"] > rows["ours/gate"]["file_bytes"]
    assert res["selected_variant"] in ("ours/gate", "ours/proxy")
    assert "ours/gate - lora: eval/rank-1" in res["comparisons"]
    gate = res["gate_calibration"]
    assert gate["gate_temperature"] > 0 and 0.5 < gate["separation_auc"] <= 1.0


def test_outputs_written_and_labelled_synthetic(results):
    res, files, out = results
    names = {p.name for p in files}
    assert names == {"benchmark_table.md", "benchmark_results.json", "benchmark_cmc.png", "benchmark_forgetting.png"}
    for p in files:
        assert p.stat().st_size > 0
    table = (out / "docs" / "benchmark_table.md").read_text()
    assert "synthetic identities (not faces)" in table and "plain LoRA" in table
    saved = json.loads((out / "docs" / "benchmark_results.json").read_text())
    assert saved["synthetic_note"] == "data are synthetic identities (not faces)" and "runs" not in saved
    assert "runs" in json.loads((out / "report" / "benchmark_results.json").read_text())
    assert sum(line.startswith("| ") for line in format_table(res).splitlines()) == len(res["rows"]) + 1
