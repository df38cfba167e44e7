"""One benchmark run: data from the chosen source, every row trained and evaluated per seed, then aggregated.

Layout of ``<out>``:

- ``<method>/seed<k>/``: each trained row's adapter (``PeftModel.from_pretrained``) or full model
  (``AutoModel.from_pretrained``), its head, model card and ``metrics.json`` (every metric, every mode);
- ``<method>/metrics.json`` for rows that are not trained (the untouched base, reference models);
- ``results.json``: settings, data summary, gate calibration, every run and the aggregated rows;
- ``base/``: the random base of pipeline checks (``--base random`` / ``standin-vit``), which the saved
  adapters point at;
- ``work/``: the prepared adaptation images the trainer reads and the trainer's scratch folders, deleted at
  the end unless ``keep_work``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .aggregate import aggregate
from .data import BenchmarkData
from .evaluate import evaluate_split, model_embedder, reference_embedder
from .methods import MethodSpec, all_linear_targets, resolve_target_set, select_methods, train_config
from .models import load_base, load_trained, prepare_base, publish_run_folder, weights_file_size
from .report import write_json
from .settings import BenchmarkSettings
from .sources import build_data
from .sources.synthetic import SYNTHETIC_NOTE

__all__ = ["benchmark_gate", "run_benchmark", "write_adapt_folder"]


def benchmark_gate(data: BenchmarkData, ps: dict[str, Any], mode: str = "sigmoid") -> dict[str, Any]:
    """The gate (``mode``: sigmoid or linear) of the 'resolution' estimator, calibrated on sharp vs degraded
    adaptation images (the one calibration that training and ``petal-peft calibrate`` use too)."""
    from ..quality import calibrate_gate_on_images
    from .evaluate import normalise

    return calibrate_gate_on_images(
        normalise(data.calib_sharp, ps),
        normalise(data.calib_low, ps),
        "resolution",
        image_mean=ps["image_mean"],
        image_std=ps["image_std"],
        mode=mode,
    )


def write_adapt_folder(data: BenchmarkData, root: Path) -> Path:
    """``root/adapt-train/<identity>/<n>.png``: the sharp adaptation images (the trainer degrades them)."""
    from ..files import atomic_directory

    folder = root / "adapt-train"
    with atomic_directory(folder) as tmp:
        for name, images in sorted(data.adapt.items()):
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"identity name {name!r} cannot be a folder name.")
            (tmp / name).mkdir()
            for n, img in enumerate(images):
                img.convert("RGB").save(tmp / name / f"{n}.png", format="PNG")
    return folder


def _evaluate_all(embedders: dict[str, Any], data: BenchmarkData, splits: tuple[str, ...]) -> dict[str, Any]:
    return {mode: {name: evaluate_split(fn, data.splits[name]) for name in splits} for mode, fn in embedders.items()}


def _spec_record(spec: MethodSpec) -> dict[str, Any]:
    return {k: v for k, v in asdict(spec).items() if k != "description"}


def _base_identity(base_model: str | None, name: str) -> str:
    """What identifies the base: its name, and for a folder its config and weight file sizes."""
    if base_model is None or not Path(base_model).is_dir():
        return name
    folder = Path(base_model)
    config = (folder / "config.json").read_text(encoding="utf-8") if (folder / "config.json").is_file() else ""
    sizes = sorted((p.name, p.stat().st_size) for p in folder.glob("*.safetensors"))
    return json.dumps([name, config, sizes])


def _saved_rows(folder: Path, fingerprint: str) -> list[dict[str, Any]] | None:
    """The rows of a finished (row, seed) from its metrics.json, if it was run with the same settings."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("fingerprint") != fingerprint:
        return None
    info = {k: v for k, v in saved.items() if k not in ("modes", "description")}
    return [dict(info, mode=mode, resumed=True, **metrics) for mode, metrics in saved["modes"].items()]


def _run_row(
    spec: MethodSpec,
    seed: int,
    splits: tuple[str, ...],
    folder: Path,
    fingerprint: str,
    *,
    s: BenchmarkSettings,
    out: Path,
    work: Path,
    base: torch.nn.Module,
    base_model: str | None,
    ps: dict[str, Any],
    data: BenchmarkData,
    gate: dict[str, Any],
    train_dir: Path,
    image_size: int,
    all_linear: list[str],
    target_set: list[str] | None,
) -> list[dict[str, Any]]:
    """Train (if the row is trained), save, evaluate one (row, seed); write its metrics.json."""
    from ..training import train
    from .reference import REFERENCE_MODELS

    info: dict[str, Any] = {"method": spec.name, "seed": seed, "fingerprint": fingerprint}
    reference = None
    if spec.reference is not None:
        reference = REFERENCE_MODELS.build(spec.reference, num_workers=s.num_threads, progress=s.progress)
        embedders = {"plain": reference_embedder(reference)}
        info.update(trainable_parameters=0, file_bytes=0, train_s=0.0)
    elif not spec.trained:
        embedders = {m: model_embedder(base, m, ps, s.eval_batch_size, s.flip_test) for m in spec.eval_modes}
        info.update(trainable_parameters=0, file_bytes=0, train_s=0.0)
    else:
        run_dir = work / "runs" / f"{spec.name}-s{seed}"
        config = train_config(spec, s, seed, base_model, train_dir, run_dir, gate, image_size, all_linear, target_set)
        result = train(config)
        publish_run_folder(result.adapter_dir, folder)
        shutil.rmtree(run_dir, ignore_errors=True)
        model = load_trained(spec.finetune_method, base_model, folder)
        embedders = {m: model_embedder(model, m, ps, s.eval_batch_size, s.flip_test) for m in spec.eval_modes}
        info.update(
            trainable_parameters=result.trainable_parameters,
            file_bytes=weights_file_size(folder),
            train_s=result.runtime_s,
            final_loss=result.final_loss,
        )
    t_eval = time.perf_counter()
    metrics = _evaluate_all(embedders, data, splits)
    info["eval_s"] = time.perf_counter() - t_eval
    if reference is not None:
        info["reference_stats"] = reference.stats()
    write_json(folder / "metrics.json", {**info, "description": spec.description, "modes": metrics})
    return [dict(info, mode=mode, **metrics[mode]) for mode in metrics]


def run_benchmark(s: BenchmarkSettings, methods: list[MethodSpec] | None = None) -> dict[str, Any]:
    """Run every row for every seed; the results dict is also written to ``<out>/results.json``.

    With ``s.resume``, a (row, seed) whose ``metrics.json`` was written with the same settings, row and base is
    read back instead of run again (an interrupted run continues where it stopped).
    """
    torch.set_num_threads(s.num_threads)
    if not s.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    methods = methods or select_methods(s)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    base_model, ps = prepare_base(s.base, out / "base", s.progress)
    image_size = int(ps["image_size"])
    t0 = time.perf_counter()
    data = build_data(s, image_size)
    timings["data_s"] = time.perf_counter() - t0
    gate = benchmark_gate(data, ps, s.gate_mode)
    train_dir = write_adapt_folder(data, work)
    base = load_base(base_model)
    base_params = sum(p.numel() for p in base.parameters())
    all_linear = all_linear_targets(base)
    target_set = resolve_target_set(base, s.targets)
    runs: list[dict[str, Any]] = []
    jobs = [(spec, seed) for spec in methods for seed in (s.seeds if spec.trained else s.seeds[:1])]
    bar = tqdm(jobs, desc="benchmark", disable=not s.progress)
    base_id = _base_identity(base_model, s.base)
    context = dict(s=s, out=out, work=work, base=base, base_model=base_model, ps=ps, data=data, gate=gate)
    context.update(train_dir=train_dir, image_size=image_size, all_linear=all_linear, target_set=target_set)
    try:
        for spec, seed in bar:
            bar.set_postfix(method=spec.name, seed=seed)
            splits: tuple[str, ...] = ("val", "eval")
            if spec.reference is not None or (s.validation_rows == "variants" and not spec.is_variant):
                splits = ("eval",)  # only the candidates for the best variant need the validation group
            splits = tuple(g for g in splits if g in s.groups) or tuple(s.groups)
            folder = out / spec.name / f"seed{seed}" if spec.trained else out / spec.name
            row = _spec_record(spec)
            fingerprint = s.fingerprint(row=row, splits=list(splits), base=base_id, seed=seed if spec.trained else None)
            rows = _saved_rows(folder, fingerprint) if s.resume else None
            if rows is None:
                rows = _run_row(spec, seed, splits, folder, fingerprint, **context)
            runs += rows
            if not spec.trained:  # deterministic: the same numbers for every seed
                runs += [dict(r, seed=other) for other in s.seeds[1:] for r in rows]
    finally:
        if not s.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    results = aggregate(runs, methods, base_params)
    results.update(
        settings=s.to_dict(),
        data=data.description,
        data_tag=data.tag,
        terms=data.terms,
        real_faces=data.real_faces,
        synthetic_note=None if data.real_faces else f"data are {SYNTHETIC_NOTE}",
        data_summary=data.summary,
        gate_calibration=gate,
        base=s.base,
        base_parameters=base_params,
        image_size=image_size,
        timings=timings,
        runtime_s=time.perf_counter() - start,
        methods={m.name: m.description for m in methods},
        runs=runs,
    )
    write_json(out / "results.json", results)
    return results
