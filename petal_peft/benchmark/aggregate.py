"""From per-seed runs to rows: mean ± std over seeds, changes vs the untouched base, paired differences.

The best quality-gated variant is chosen on the VALIDATION identities (held out of adaptation and of
evaluation), by mean validation rank-1; the evaluation group plays no part in the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .methods import MethodSpec

__all__ = ["METRICS", "aggregate", "mean_std", "row_label"]

METRICS = ("rank-1", "rank-5", "rank-10", "rank-20", "mAP", "hr_verification")
COMPARED = ("rank-1", "mAP", "hr_verification")

_LABELS = {
    ("pretrained", "plain"): "pretrained (untouched)",
    ("full", "plain"): "full fine-tuning",
    ("lora", "plain"): "plain LoRA (PEFT, rank 2r)",
    ("ours", "gate"): "ours: gate per image",
    ("ours", "proxy"): "ours: proxy encoders",
    ("dlib-reference", "plain"): "dlib ResNet teacher (reference, not trained)",
}


def row_label(method: str, mode: str) -> str:
    if (method, mode) in _LABELS:
        return _LABELS[(method, mode)]
    if method.endswith("-reference"):
        return f"{method[: -len('-reference')]} (reference, not trained)"
    return f"{method}: {'gate per image' if mode == 'gate' else mode}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _by_seed(runs: list[dict[str, Any]], method: str, mode: str | None = None) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in runs if r["method"] == method and (mode is None or r["mode"] == mode)}


def aggregate(runs: list[dict[str, Any]], methods: list[MethodSpec], base_params: int) -> dict[str, Any]:
    """Rows per (method, mode), the selected variant, and paired differences of ours vs LoRA and full FT."""
    keys = list(dict.fromkeys((r["method"], r["mode"]) for r in runs))
    rows: dict[str, dict[str, Any]] = {}
    pre = _by_seed(runs, "pretrained")
    for method, mode in keys:
        rs = sorted((r for r in runs if r["method"] == method and r["mode"] == mode), key=lambda r: r["seed"])
        row: dict[str, Any] = {"method": method, "mode": mode, "label": row_label(method, mode), "seeds": len(rs)}
        for split in ("val", "eval"):
            if not all(split in r for r in rs):
                continue  # reference rows are evaluated on the eval group only
            for metric in METRICS:
                if all(metric in r[split] for r in rs):
                    row[f"{split}/{metric}"] = mean_std([r[split][metric] for r in rs])
            row[f"{split}/cmc"] = np.mean([r[split]["cmc"] for r in rs], axis=0).tolist()
            for metric in COMPARED:
                paired = [
                    r[split][metric] - pre[r["seed"]][split][metric]
                    for r in rs
                    if r["seed"] in pre
                    and split in pre[r["seed"]]
                    and metric in r[split]
                    and metric in pre[r["seed"]][split]
                ]
                if paired:
                    row[f"{split}/delta_{metric}"] = mean_std(paired)
        row["trainable_parameters"] = int(rs[0]["trainable_parameters"])
        row["trainable_percent"] = 100.0 * row["trainable_parameters"] / base_params if base_params else 0.0
        row["file_bytes"] = int(rs[0]["file_bytes"])
        row["train_s"] = mean_std([r["train_s"] for r in rs])
        row["eval_s"] = mean_std([r.get("eval_s", 0.0) for r in rs])
        if rs[0].get("reference_stats"):
            row["reference_stats"] = rs[0]["reference_stats"]
        rows[f"{method}/{mode}"] = row
    variants = {m.name for m in methods if m.is_variant}
    candidates = [k for k, r in rows.items() if r["method"] in variants and "val/rank-1" in r]
    selected = max(candidates, key=lambda k: rows[k]["val/rank-1"][0]) if candidates else None
    comparisons = {}
    ours_keys = [
        k for k, r in rows.items() if r["method"].split("-", 1)[0] == "ours" and r["mode"] in ("gate", "proxy")
    ]
    for key in list(dict.fromkeys(ours_keys + ([selected] if selected else []))):
        method, mode = key.split("/")
        suffix = method[len("ours") :]  # "-distill": compared with lora-distill, the same objective
        mine = _by_seed(runs, method, mode)
        for name in (f"lora{suffix}", f"full{suffix}"):
            other = _by_seed(runs, name)
            seeds = sorted(s for s in set(mine) & set(other) if "eval" in mine[s] and "eval" in other[s])
            if not seeds:
                continue
            for metric in COMPARED:
                diffs = [mine[sd]["eval"][metric] - other[sd]["eval"][metric] for sd in seeds]
                comparisons[f"{key} - {name}: eval/{metric}"] = mean_std(diffs)
    return {"rows": rows, "selected_variant": selected, "comparisons": comparisons}
