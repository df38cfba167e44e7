"""Same or different person: a distance threshold taken from an evaluation report.

``petal-peft eval --benchmark verification`` runs 10-fold verification: in each fold it picks the squared L2
distance between unit embeddings (0..4, step 0.01) that classifies the other nine folds best, and the report
records the mean of those ten thresholds per embedding mode (``results.<mode>.threshold``) next to the accuracy it
reached. That mean is the operating point measured on held-out folds, so it is the threshold used here: a pair is
"same" when ``|a - b|^2 < threshold`` (equivalently cosine > 1 - threshold / 2). It is only valid for embeddings
made the same way (same mode, flip test and preprocessing, and the same model), which is checked.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class ReportThreshold:
    """A verification threshold and what it is valid for."""

    value: float
    mode: str
    pair_role: str | None
    dataset: str
    accuracy: float | None
    accuracy_std: float | None
    report_path: str
    flip_test: bool | None
    transform: dict[str, Any] | None
    base_model: str | None
    weights: dict[str, Any] | None = None

    @property
    def cosine(self) -> float:
        """The same threshold as a cosine similarity (same when cosine > this)."""
        return 1.0 - self.value / 2.0

    def describe(self) -> str:
        acc = "" if self.accuracy is None else f", {self.accuracy:.2f}% 10-fold accuracy"
        role = f" ({self.pair_role} encoder)" if self.pair_role else ""
        return (
            f"threshold {self.value:.4g} (squared L2; cosine {self.cosine:.4g}) from {self.dataset}, mode "
            f"{self.mode}{role}{acc}"
        )


def report_mode_for(encoder: str) -> tuple[str, str | None]:
    """The evaluation mode (and proxy pair role) that embeds images the way ``encoder`` does."""
    if encoder in ("gallery", "probe"):
        return "proxy", encoder
    return encoder, None


def threshold_from_report(
    path: str | os.PathLike, mode: str | None = None, encoder: str | None = None
) -> ReportThreshold:
    """Read the verification threshold of one embedding mode from a report of ``petal-peft eval``.

    ``mode`` picks the report's mode (plain / gate / proxy); by default the one matching ``encoder`` (the way
    the embeddings to verify were made), or the report's only mode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation report not found: {path}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(report, dict) or "results" not in report:
        raise ValueError(f"{path} is not a report of petal-peft eval (no 'results').")
    if report.get("benchmark") != "verification":
        raise ValueError(
            f"{path} is a {report.get('benchmark')!r} report; only 1:1 verification reports record a threshold: "
            "run petal-peft eval --benchmark verification on a pair list or .bin of your data."
        )
    results = report["results"]
    roles = {label: (e or {}).get("pair_role") for label, e in (report.get("embedders") or {}).items()}
    if mode is None and encoder is not None:
        wanted, role = report_mode_for(encoder)
        if wanted not in results:
            raise ValueError(
                f"{path} has no threshold for {wanted!r} embeddings (it has {sorted(results)}): evaluate the way "
                "these images are embedded, or pass --report-mode to use another mode's threshold knowingly."
            )
        if role is not None and roles.get(wanted) not in (None, role):
            raise ValueError(
                f"{path}: its proxy threshold was measured with the {roles[wanted]} encoder on both sides of each "
                f"pair, but these embeddings come from the {role} encoder; embed with --encoder {roles[wanted]} "
                f"or evaluate with --pair-role {role}."
            )
        mode = wanted
    elif mode is None:
        if len(results) != 1:
            raise ValueError(f"{path} has thresholds for several modes {sorted(results)}; choose one (--report-mode).")
        mode = next(iter(results))
    if mode not in results:
        raise ValueError(f"{path} has no results for mode {mode!r}; it has {sorted(results)}.")
    metrics = results[mode]
    value = metrics.get("threshold")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 4:
        raise ValueError(f"{path}: results.{mode}.threshold must be a squared L2 distance in (0, 4], got {value!r}.")
    model = report.get("model") or {}
    return ReportThreshold(
        value=float(value),
        mode=mode,
        pair_role=roles.get(mode),
        dataset=str(report.get("dataset", "?")),
        accuracy=metrics.get("accuracy"),
        accuracy_std=metrics.get("accuracy_std"),
        report_path=str(path),
        flip_test=model.get("flip_test"),
        transform=report.get("transform"),
        base_model=model.get("base_model"),
        weights=model.get("weights"),
    )


def check_threshold_applies(threshold: ReportThreshold, info: dict[str, Any]) -> None:
    """Refuse embeddings made with other weights (base model, or adapter outside the plain mode; by their
    fingerprints), another flip test or preprocessing than the report's."""
    from .provenance import check_same_weights

    check_same_weights(
        threshold.weights,
        info.get("weights"),
        f"the evaluation report {threshold.report_path}",
        f"the embeddings {info.get('path') or '(embedded now)'}",
        compare_adapter=threshold.mode != "plain",
    )
    flip = info.get("flip_test")
    if threshold.flip_test is not None and flip is not None and bool(flip) != bool(threshold.flip_test):
        raise ValueError(
            f"the threshold in {threshold.report_path} was measured with flip test {threshold.flip_test}, these "
            f"embeddings with flip test {flip}: distances are not comparable."
        )
    mine, theirs = info.get("transform"), threshold.transform
    if mine and theirs:
        for key in ("size", "mean", "std"):
            a, b = mine.get(key), theirs.get(key)
            if a is not None and b is not None and not np.allclose(np.asarray(a, float), np.asarray(b, float)):
                raise ValueError(
                    f"the threshold in {threshold.report_path} was measured on images with {key} {b}, these "
                    f"embeddings use {key} {a}: distances are not comparable."
                )
    base = info.get("base_model")
    if (
        threshold.base_model
        and base
        and os.path.basename(os.path.normpath(str(base)))
        != os.path.basename(os.path.normpath(str(threshold.base_model)))
    ):
        logger.warning(
            "the report evaluated base model %s, these embeddings come from %s; the threshold may not apply",
            threshold.base_model,
            base,
        )


def pair_distances(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Squared L2 distance of each row pair of unit embeddings."""
    if a.shape != b.shape:
        raise ValueError(f"embedding pairs must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}.")
    return ((a.double() - b.double()) ** 2).sum(dim=1).numpy()


def read_pairs(path: str | os.PathLike) -> tuple[list[tuple[str, str]], list[bool] | None]:
    """A pair list: ``<image_a> <image_b> [label]`` per line (spaces, tabs or commas); labels all or none."""
    from petal_peft.evaluation.verification import read_pair_rows

    return read_pair_rows(path)
