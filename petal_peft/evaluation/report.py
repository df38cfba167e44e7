"""Writing evaluation reports (JSON) and turning metrics into the Hub's ``model-index`` entries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..files import to_jsonable  # noqa: F401  (re-exported: it lived here)

#: Readable dataset names for the model card, by benchmark / dataset key.
PRETTY_DATASET_NAMES = {
    "tinyface": "TinyFace",
    "IJBB": "IJB-B",
    "IJBC": "IJB-C",
    "lfw": "LFW",
    "agedb_30": "AgeDB-30",
    "cfp_fp": "CFP-FP",
    "calfw": "CALFW",
    "cplfw": "CPLFW",
}

TASK_NAMES = {
    "tinyface": "Face identification",
    "verification": "Face verification",
    "ijb": "Face verification (templates)",
}


def _metric_type(name: str) -> str:
    return name.lower().replace(" ", "_").replace("@", "_at_").replace("=", "_")


def metrics_to_model_index(
    metrics: Mapping[str, Any],
    model_name: str,
    dataset_name: str,
    dataset_type: str | None = None,
    *,
    task_type: str = "image-feature-extraction",
    task_name: str | None = None,
    dataset_split: str | None = "test",
    dataset_config: str | None = None,
    source_name: str | None = None,
    source_url: str | None = None,
) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` (a list with one model entry) for numeric ``metrics`` on one dataset.

    Non-numeric entries and counts (``num_*``) are left out, NaN too. The result can go straight into the
    card's YAML: ``ModelCardData(model_index=...)`` or ``card.data.model_index``. Built with huggingface_hub's
    :class:`EvalResult` helpers, which work offline.
    """
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    if not model_name:
        raise ValueError("model_name must be a non-empty string.")
    results = []
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            continue
        if str(name).startswith("num_") or not math.isfinite(float(value)):
            continue
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=dataset_type or dataset_name.lower().replace(" ", "_").replace("-", "_"),
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                dataset_config=dataset_config,
                metric_type=_metric_type(str(name)),
                metric_name=str(name),
                metric_value=round(float(value), 4),
                source_name=source_name,
                source_url=source_url,
            )
        )
    if not results:
        raise ValueError(f"no numeric metrics to put in the model index: {sorted(metrics)}.")
    return eval_results_to_model_index(model_name, results)


def report_to_model_index(
    report: Mapping[str, Any],
    model_name: str,
    modes: tuple[str, ...] | None = None,
    headline_only: bool = True,
) -> list[dict[str, Any]]:
    """``model-index`` entries for a report written by :func:`petal_peft.evaluation.evaluate`.

    With several embedding modes, each metric name gets the mode in brackets, e.g. ``rank-1 (gate)``.
    """
    benchmark = report["benchmark"]
    dataset = report.get("dataset", benchmark)
    per_mode = report["results"]
    chosen = [m for m in (modes or tuple(per_mode)) if m in per_mode]
    if not chosen:
        raise ValueError(f"the report has no results for modes {modes}; it has {sorted(per_mode)}.")
    headline = report.get("headline_metrics") or []
    metrics: dict[str, Any] = {}
    for mode in chosen:
        for name, value in per_mode[mode].items():
            if headline_only and headline and name not in headline:
                continue
            metrics[name if len(chosen) == 1 else f"{name} ({mode})"] = value
    return metrics_to_model_index(
        metrics,
        model_name=model_name,
        dataset_name=PRETTY_DATASET_NAMES.get(dataset, dataset),
        dataset_type=str(dataset).lower(),
        task_name=TASK_NAMES.get(benchmark),
    )
