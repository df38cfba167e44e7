"""The evaluator base class and the registry of benchmarks by name.

Each benchmark knows its data layout and protocol; it asks an :class:`~.extractor.Embedder` for embeddings
(gallery, probe or pair role) and turns them into metrics with the pure functions in :mod:`.metrics`. Results
of several embedders (e.g. the gated adapter and the proxy encoders) are kept by label, so plots overlay them.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from petal_peft.extras import install_hint
from petal_peft.registry import Registry

from ..embedding.extractor import Embedder
from ..embedding.images import ImageTransform

_NO_MATPLOTLIB = f"matplotlib is not installed; no plots written ({install_hint('plots')})."

logger = logging.getLogger(__name__)

#: benchmark name -> Evaluator subclass; ``EVALUATORS.build(name, data_path=..., transform=..., **options)``.
EVALUATORS = Registry("evaluator")


@dataclass
class EvaluationResult:
    """What one embedder scored on one benchmark: metrics, curves for plots, per-role quality values."""

    metrics: dict[str, Any]
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    quality: dict[str, np.ndarray] = field(default_factory=dict)


class Evaluator(ABC):
    """A benchmark: validates its data layout on construction, then ``run(embedder)`` returns metrics."""

    name: ClassVar[str] = ""
    #: Metrics worth a headline (model card, comparison table), in order.
    headline_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data_path: str | os.PathLike, transform: ImageTransform) -> None:
        self.data_path = os.fspath(data_path)
        if not os.path.exists(self.data_path):
            raise FileNotFoundError(f"{self.name} data not found: {self.data_path}")
        self.transform = transform
        self.results: dict[str, EvaluationResult] = {}

    @property
    def dataset_name(self) -> str:
        """A readable name of the evaluated set (e.g. the .bin stem or IJBC)."""
        return self.name

    @abstractmethod
    def evaluate(self, embedder: Embedder) -> EvaluationResult:
        """Embed the benchmark's images with ``embedder`` and compute the metrics."""

    def run(self, embedder: Embedder, label: str | None = None) -> dict[str, Any]:
        """Evaluate; keep the result under ``label`` (default: embedder mode) for plots; return metrics."""
        result = self.evaluate(embedder)
        self.results[label or embedder.mode or f"run{len(self.results)}"] = result
        return result.metrics

    def plots(self, out_dir: str | os.PathLike) -> list[str]:
        """Write the plots of every kept result into ``out_dir``; return their paths (none w/o matplotlib)."""
        try:
            from . import plots
        except ImportError:  # pragma: no cover - matplotlib missing
            logger.warning(_NO_MATPLOTLIB)
            return []
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            logger.warning(_NO_MATPLOTLIB)
            return []
        os.makedirs(out_dir, exist_ok=True)
        written: list[str] = []
        prefix = self.dataset_name.replace(os.sep, "_")
        cmc = {k: r.curves["cmc"] for k, r in self.results.items() if "cmc" in r.curves}
        if cmc:
            written.append(plots.plot_cmc(cmc, os.path.join(out_dir, f"{prefix}_cmc.png"), title=f"{prefix}: CMC"))
        roc = {k: (r.curves["fpr"], r.curves["tpr"]) for k, r in self.results.items() if "fpr" in r.curves}
        if roc:
            written.append(
                plots.plot_roc(
                    roc,
                    os.path.join(out_dir, f"{prefix}_roc.png"),
                    title=f"{prefix}: ROC",
                    mark_fars=getattr(self, "fars", ()),
                )
            )
        for label, result in self.results.items():
            if result.quality:
                path = os.path.join(out_dir, f"{prefix}_quality_{label}.png")
                title = f"{prefix}: quality q per image ({label})"
                written.append(_quality_histogram(result.quality, path, title))
        return written

    def curves_for_report(self) -> dict[str, dict[str, list[float]]]:
        """Compact curves for the JSON report: CMC up to rank 100, ROC at a few hundred log-spaced FARs."""
        from .plots import log_spaced_roc

        out: dict[str, dict[str, list[float]]] = {}
        for label, result in self.results.items():
            entry: dict[str, list[float]] = {}
            if "cmc" in result.curves:
                entry["cmc"] = [float(v) for v in result.curves["cmc"][:100]]
            if "fpr" in result.curves:
                fpr, tpr = log_spaced_roc(result.curves["fpr"], result.curves["tpr"], num=200)
                entry["fpr"], entry["tpr"] = [float(v) for v in fpr], [float(v) for v in tpr]
            if entry:
                out[label] = entry
        return out


def _quality_histogram(groups: dict[str, np.ndarray], path: str, title: str) -> str:
    """Gallery vs probe: the quality package's histogram (the one calibration plots); otherwise ours."""
    if set(groups) == {"gallery", "probe"}:
        try:
            from petal_peft.quality.plotting import plot_quality_histogram
        except ImportError:
            pass
        else:
            return str(
                plot_quality_histogram(
                    groups["gallery"],
                    groups["probe"],
                    path,
                    labels=("gallery", "probe"),
                    xlabel="q (1 = high quality)",
                    title=title,
                )
            )
    from .plots import plot_quality_histogram as plot_groups

    return plot_groups(groups, path, title=title)


def quality_of(embeddings: Any) -> np.ndarray | None:
    """The q of each original (unmirrored) image of an :class:`~.extractor.Embeddings`, if recorded."""
    return None if embeddings.quality is None else embeddings.quality.numpy()
