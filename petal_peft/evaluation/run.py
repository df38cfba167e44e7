"""Running a benchmark end to end: models -> embedders -> evaluator -> JSON report and plots.

This is what ``petal-peft eval`` calls; it is also the Python entry point (:func:`evaluate`,
:func:`build_embedders`) for scripts and for training, which evaluates its checkpoints the same way.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import EVALUATORS, Evaluator
from .extractor import (
    Embedder,
    adapter_gate_settings,
    build_quality_fn,
    gated_embedder,
    load_proxy_encoders,
    merge_proxy_encoders,
    plain_embedder,
    proxy_embedder,
)
from .images import ImageTransform
from .report import write_json_atomic

logger = logging.getLogger(__name__)

MODES = ("plain", "gate", "proxy")


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


# ----------------------------------------------------------------------------------------------------
# Models and image settings from paths (CLI)
# ----------------------------------------------------------------------------------------------------


def model_image_size(model: nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(model, "config", None), "image_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def processor_normalisation(model_path: str) -> tuple[list[float] | None, list[float] | None]:
    """image_mean / image_std from a local ``preprocessor_config.json`` next to the weights, if any."""
    path = os.path.join(model_path, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg.get("image_mean"), cfg.get("image_std")


def build_transform(
    model: nn.Module,
    model_path: str | None = None,
    *,
    image_size: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    adapter_settings: Mapping[str, Any] | None = None,
) -> ImageTransform:
    """Resize to the model's image size; normalise with (in order of precedence) the explicit values, the
    adapter's image_mean/std, the model folder's preprocessor_config.json, else 0.5 / 0.5."""
    size = (image_size, image_size) if image_size else model_image_size(model)
    if size is None:
        raise ValueError("the model config has no image_size; pass image_size (CLI: --image-size).")
    proc_mean, proc_std = (
        processor_normalisation(model_path) if model_path and os.path.isdir(model_path) else (None, None)
    )
    settings = adapter_settings or {}
    mean = image_mean or settings.get("image_mean") or proc_mean or [0.5]
    std = image_std or settings.get("image_std") or proc_std or [0.5]
    return ImageTransform(size=size, mean=tuple(mean), std=tuple(std))  # type: ignore[arg-type]


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
    the encoders merged at q = 1 / q = 0 (loaded from ``proxy_encoders_path`` or merged from the adapter).
    """
    settings = None
    peft_model = None
    plain_model = base_model
    proxies = None
    if modes is not None:
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown embedding modes {bad}; choose from {MODES}.")
    if proxy_encoders_path is not None and (modes is None or "proxy" in modes):
        # checked against the base model before an adapter wraps it: encoders of another model are refused
        proxies = load_proxy_encoders(proxy_encoders_path, base_model=base_model)
    if adapter_path is not None:
        import petal_peft  # noqa: F401  (registers the quality-gated tuner with PEFT)
        from petal_peft.tuner import check_proxy_encoders, load_quality_gated_adapter

        if modes is None or "plain" in modes:
            plain_model = copy.deepcopy(base_model)
        peft_model = load_quality_gated_adapter(base_model, adapter_path)
        peft_model.eval()
        if proxies is not None:
            check_proxy_encoders(proxy_encoders_path, *proxies, peft_model=peft_model)
        settings = adapter_gate_settings(peft_model)
        if quality_estimator:
            settings["quality_estimator"] = quality_estimator
            settings["quality_estimator_kwargs"] = dict(quality_estimator_kwargs or {})
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
        if mode == "plain":
            embedders["plain"] = plain_embedder(plain_model, **extractor_kwargs)
        elif mode == "gate":
            if peft_model is None:
                raise ValueError("the gate mode needs an adapter (CLI: --adapter).")
            override = build_quality_fn(settings or {}) if quality_estimator else None
            embedders["gate"] = gated_embedder(peft_model, override, **extractor_kwargs)
        elif mode == "proxy":
            if proxies is not None:
                gallery, probe = proxies
            elif peft_model is not None:
                gallery, probe = merge_proxy_encoders(peft_model)
            else:
                raise ValueError("the proxy mode needs an adapter (--adapter) or exported encoders (--proxy-encoders).")
            embedders["proxy"] = proxy_embedder(gallery, probe, pair_role=pair_role, **extractor_kwargs)
    return embedders, settings


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
