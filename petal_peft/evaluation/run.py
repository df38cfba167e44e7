"""Running a benchmark end to end: models -> embedders -> evaluator -> JSON report and plots.

This is what ``petal-peft eval`` calls; it is also the Python entry point (:func:`evaluate`,
:func:`build_embedders`) for scripts and for training, which evaluates its checkpoints the same way.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..embedding.builder import MODE_ALIASES, MODES, build_embedder, canonical_mode, gate_settings
from ..embedding.extractor import (
    Embedder,
    build_quality_fn,
    load_proxy_encoders,
)
from ..embedding.images import ImageTransform
from ..embedding.loading import load_adapter
from ..embedding.runtime import (  # noqa: F401  (re-exported: they lived here)
    build_transform,
    model_image_size,
    processor_normalisation,
    resolve_device,
)
from .base import EVALUATORS, Evaluator
from .report import write_json_atomic

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("petal-peft")
    except Exception:
        return "unknown"


def comparison(results: Mapping[str, Mapping[str, Any]], headline: Sequence[str]) -> dict[str, dict[str, float]]:
    """Headline-metric differences between modes (``"proxy - gate"``, ``"gate - plain"``, ...)."""
    out: dict[str, dict[str, float]] = {}
    order = [m for m in ("plain", "gate", "proxy") if m in results] + [m for m in results if m not in MODES]
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            diffs = {}
            for name in headline or results[a].keys():
                va, vb = results[a].get(name), results[b].get(name)
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
                    if not str(name).startswith("num_"):
                        diffs[name] = float(vb) - float(va)
            out[f"{b} - {a}"] = diffs
    return out


def evaluate(
    benchmark: str | Evaluator,
    embedders: Mapping[str, Embedder],
    out_dir: str | os.PathLike,
    *,
    data_path: str | os.PathLike | None = None,
    transform: ImageTransform | None = None,
    evaluator_options: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
    make_plots: bool = True,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Evaluate every embedder on one benchmark; write ``<dataset>_report.json`` and PNG plots to ``out_dir``.

    ``benchmark`` is a registered name (``EVALUATORS.names()``), built with ``data_path``, ``transform`` and
    ``evaluator_options``, or a ready :class:`Evaluator`. Returns the report dict. With ``overwrite=False`` an
    existing report is refused before any image is embedded; the output folder is checked then too.
    """
    from petal_peft.outputs import check_output_file, check_output_folder

    check_output_folder(out_dir, overwrite=overwrite, existing_ok=True)
    if not embedders:
        raise ValueError("no embedders to evaluate.")
    if isinstance(benchmark, Evaluator):
        evaluator = benchmark
    else:
        if data_path is None or transform is None:
            raise ValueError("a benchmark given by name needs data_path and transform.")
        evaluator = EVALUATORS.build(
            benchmark, data_path=data_path, transform=transform, **dict(evaluator_options or {})
        )
    report_path = os.path.join(out_dir, f"{evaluator.dataset_name}_report.json")
    check_output_file(report_path, overwrite=overwrite, flag="--out: report")
    results = {}
    for label, embedder in embedders.items():
        logger.info("evaluating %s on %s with %s", label, evaluator.dataset_name, embedder.describe())
        results[label] = evaluator.run(embedder, label=label)
    os.makedirs(out_dir, exist_ok=True)
    plots = evaluator.plots(out_dir) if make_plots else []
    headline = list(evaluator.headline_metrics)
    report = {
        "benchmark": evaluator.name,
        "dataset": evaluator.dataset_name,
        "data_path": os.path.abspath(evaluator.data_path),
        "headline_metrics": headline,
        "units": "percent for rates, accuracies, mAP and AUC",
        "results": results,
        "comparison": comparison(results, headline) if len(results) > 1 else {},
        "embedders": {label: e.describe() for label, e in embedders.items()},
        "transform": {
            "size": list(evaluator.transform.size),
            "mean": list(evaluator.transform.mean),
            "std": list(evaluator.transform.std),
        },
        "model": dict(model_info or {}),
        "plots": [os.path.basename(p) for p in plots],
        "curves": evaluator.curves_for_report(),
        "petal_peft_version": _version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    report["report_path"] = write_json_atomic(report_path, report)
    return report


def build_embedders(
    base_model: nn.Module,
    *,
    adapter_path: str | None = None,
    proxy_encoders_path: str | None = None,
    modes: Sequence[str] | None = None,
    quality_estimator: str | None = None,
    quality_estimator_kwargs: Mapping[str, Any] | None = None,
    pair_role: str = "gallery",
    **extractor_kwargs: Any,
) -> tuple[dict[str, Embedder], dict[str, Any] | None]:
    """The embedders for the requested ``modes`` (None: every mode the inputs allow), and the adapter's gate
    settings (None without an adapter).

    ``plain`` is the base model without adapter, ``gate`` the live adapter with per-image quality, ``proxy``
    the encoders merged at q = 1 / q = 0 (loaded from ``proxy_encoders_path`` or merged from the adapter), and
    ``gallery`` / ``probe`` one of those two for every image (see :mod:`petal_peft.embedding.builder`).
    """
    settings = None
    peft_model = None
    plain_model = base_model
    proxies = None
    if modes is not None:
        bad = [m for m in modes if m not in MODES and MODE_ALIASES.get(m) not in MODES]
        if bad:
            raise ValueError(f"unknown embedding modes {bad}; choose from {MODES}.")
        modes = [canonical_mode(m) for m in modes]
    if proxy_encoders_path is not None and (modes is None or {"proxy", "gallery", "probe"} & set(modes)):
        # checked against the base model before an adapter wraps it: encoders of another model are refused
        proxies = load_proxy_encoders(proxy_encoders_path, base_model=base_model)
    if adapter_path is not None:
        from petal_peft.tuner import check_proxy_encoders

        if modes is None or "plain" in modes:
            plain_model = copy.deepcopy(base_model)
        peft_model = load_adapter(base_model, adapter_path)
        if proxies is not None:
            check_proxy_encoders(proxy_encoders_path, *proxies, peft_model=peft_model)
        settings = gate_settings(peft_model, quality_estimator, quality_estimator_kwargs)
    if modes is None:
        modes = ["plain"]
        if peft_model is not None:
            if settings and settings.get("quality_estimator"):
                modes.append("gate")
            else:
                logger.warning(
                    "the adapter has no quality estimator: skipping the gate mode (pass --quality-estimator)."
                )
            modes.append("proxy")
        elif proxy_encoders_path is not None:
            modes.append("proxy")
    embedders: dict[str, Embedder] = {}
    for mode in modes:
        override = build_quality_fn(settings or {}) if mode == "gate" and quality_estimator else None
        embedders[mode] = build_embedder(
            mode,
            plain_model if mode == "plain" else peft_model,
            proxies=proxies,
            quality_fn=override,
            pair_role=pair_role,
            **extractor_kwargs,
        )
    return embedders, settings
