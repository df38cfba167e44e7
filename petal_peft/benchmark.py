"""The low-resolution adaptation benchmark (TinyFace/BRIAR-like protocol), as a library.

A pretrained face ViT (it saw only the *pretrain* identities) is adapted on the *adapt* identities, a fraction
of whose images are degraded to low resolution, with each method at the same budget; then it is evaluated on
*eval* identities it never saw: degraded probes against a sharp gallery with distractors (closed-set CMC, rank
1/5/10/20) and sharp 1:1 verification (10-fold accuracy) to measure forgetting. Methods: the pretrained model
untouched, full fine-tuning, PEFT's plain LoRA with the same trainable-parameter count, and the quality-gated
adapter (per-image gate, and merged proxy encoders) in a few variants, of which the best is picked on a
*validation* split of adapt identities (never on the eval group).

Default data: the project's procedural synthetic identities, which are NOT faces (no identity-labelled face set
is obtainable offline here; docs/real_faces.md). Real faces can be given (``real_faces="olivetti"`` or a folder
``root/<identity>/<image>``); they are then split by identity into adapt / validation / eval groups.
``benchmarks/lowres_benchmark.py`` is the command line; docs/benchmark.md shows a measured run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

__all__ = [
    "BenchmarkData",
    "BenchmarkSettings",
    "MethodSpec",
    "aggregate",
    "build_data",
    "default_methods",
    "format_table",
    "plot_cmc",
    "plot_forgetting",
    "run_benchmark",
]

SYNTHETIC_NOTE = "synthetic identities (not faces)"
DISTRACTOR = -100  # petal_peft.evaluation.DISTRACTOR_LABEL


@dataclass
class BenchmarkSettings:
    """Sizes, budget and sources of one benchmark run (every field is a command-line flag of the script)."""

    out: str = "outputs/benchmark"
    seeds: tuple[int, ...] = (0, 1, 2)
    # base: "pretrained" (the shipped/cached small face ViT), "random" (a tiny random ViT: pipeline checks), or
    # a folder with a transformers ViT checkpoint
    base: str = "pretrained"
    # data: None -> synthetic identities; "olivetti" or a folder root/<identity>/<image> -> real faces
    real_faces: str | None = None
    adapt_identities: int = 300
    adapt_images: int = 16
    val_identities: int = 60
    eval_identities: int = 200
    distractor_identities: int = 200
    gallery_images: int = 2
    probe_images: int = 3
    verification_images: int = 4
    verification_pairs: int = 3000
    # degradations, as fractions of the base's input size (TinyFace faces are ~20 px on a 112 px input)
    probe_size_fraction: tuple[float, float] = (0.1875, 0.375)
    train_size_fraction: tuple[float, float] = (0.1875, 0.5)
    degrade_fraction: float = 0.5
    # training budget, the same for every method
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    lora_r: int = 8
    head: str = "cosface"
    head_scale: float = 32.0
    head_margin: float = 0.2
    calibration_images: int = 600
    num_threads: int = 2
    progress: bool = True
    quick: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quick_settings(out: str, **overrides: Any) -> BenchmarkSettings:
    """A pipeline check: one seed, a tiny random base, a handful of identities and steps (well under a minute)."""
    values: dict[str, Any] = dict(
        out=out,
        seeds=(0,),
        base="random",
        adapt_identities=12,
        adapt_images=6,
        val_identities=6,
        eval_identities=10,
        distractor_identities=6,
        verification_images=3,
        verification_pairs=200,
        steps=6,
        batch_size=16,
        calibration_images=48,
        quick=True,
    )
    values.update(overrides)
    return BenchmarkSettings(**values)


@dataclass
class MethodSpec:
    """One trained (or untouched) model and the ways it is evaluated (``eval_modes``: plain, gate, proxy)."""

    name: str
    finetune_method: str | None  # None: the pretrained model untouched
    eval_modes: tuple[str, ...] = ("plain",)
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    is_variant: bool = False  # a quality-gated variant that competes for "best gate variant"


def default_methods() -> list[MethodSpec]:
    """Pretrained, full FT, plain LoRA, and three variants of ours (estimator/calibration/targets)."""
    # every linear layer of a transformers 5 ViTModel (module-name suffixes)
    vit_all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "dense"]
    return [
        MethodSpec("pretrained", None, description="the pretrained base, untouched"),
        MethodSpec("full", "full", description="full fine-tuning (every backbone weight)"),
        MethodSpec("lora", "lora", description="PEFT plain LoRA, rank 2r, same targets and parameter count"),
        MethodSpec(
            "ours",
            "quality_gated",
            ("gate", "proxy"),
            {"quality_source": "estimator"},
            "quality-gated: 'resolution' estimator, gate calibrated on adapt images, trained with estimated q",
            True,
        ),
        MethodSpec(
            "ours-degq",
            "quality_gated",
            ("gate", "proxy"),
            {"quality_source": "degradation"},
            "quality-gated, trained with the degradation level as q (test: calibrated 'resolution' gate)",
            True,
        ),
        MethodSpec(
            "ours-alllin",
            "quality_gated",
            ("gate",),
            {"quality_source": "estimator", "target_modules": vit_all_linear},
            "quality-gated on every linear layer (q, k, v, o, fc1, fc2, pooler): more parameters",
            True,
        ),
    ]


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkData:
    """Images as uint8 [N, 3, S, S] with integer labels; probes already degraded."""

    description: str
    real_faces: bool
    image_size: int
    adapt: dict[str, list[Image.Image]]  # training identities (written to a folder for train())
    calib_sharp: torch.Tensor
    calib_low: torch.Tensor
    splits: dict[str, dict[str, Any]]  # "val" / "eval": probes, probe_labels, gallery, gallery_labels, pairs


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB")


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _degrade_all(images: Sequence[Image.Image], sizes: tuple[int, int], seed: int) -> torch.Tensor:
    from .data import LowResolutionDegradation

    degrade = LowResolutionDegradation(min_size=sizes[0], max_size=sizes[1], seed=seed)
    out = [degrade.degrade(img, index=i).image for i, img in enumerate(images)]
    return torch.stack([torch.from_numpy(np.array(o, dtype=np.uint8)).permute(2, 0, 1) for o in out])


def _stack(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    out = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))
    return torch.stack(out)


def _verification_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half genuine, half impostor pairs over images with ``labels`` (seeded, shuffled)."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    gen, imp = np.flatnonzero(same), np.flatnonzero(~same)
    half = min(num_pairs // 2, len(gen), len(imp))
    if half < 5:
        raise ValueError(f"too few verification pairs ({half} genuine); use more identities or images.")
    pick = np.concatenate([rng.choice(gen, half, replace=False), rng.choice(imp, half, replace=False)])
    pick = pick[rng.permutation(len(pick))]
    return i[pick], j[pick], same[pick]


def _make_split(
    groups: dict[str, list[Image.Image]],
    mated: Sequence[str],
    distractors: Sequence[str],
    s: BenchmarkSettings,
    image_size: int,
    probe_sizes: tuple[int, int],
    seed: int,
) -> dict[str, Any]:
    """Probes (degraded) and gallery (sharp; match + distractors) and sharp verification pairs."""
    probes, probe_labels, gallery, gallery_labels, ver, ver_labels = [], [], [], [], [], []
    for k, name in enumerate(mated):
        imgs = groups[name]
        g = min(s.gallery_images, len(imgs) - 1)
        gallery += imgs[:g]
        gallery_labels += [k] * g
        probes += imgs[g : g + s.probe_images] if s.real_faces is None else imgs[g:]
        probe_labels += [k] * len(imgs[g : g + s.probe_images] if s.real_faces is None else imgs[g:])
        extra = imgs[g + s.probe_images :] if s.real_faces is None else imgs
        ver += extra
        ver_labels += [k] * len(extra)
    for name in distractors:
        imgs = groups[name][: s.gallery_images]
        gallery += imgs
        gallery_labels += [DISTRACTOR] * len(imgs)
    ver_labels_np = np.asarray(ver_labels)
    a, b, same = _verification_pairs(ver_labels_np, s.verification_pairs, seed)
    return {
        "probes": _degrade_all(probes, probe_sizes, seed),
        "probe_labels": np.asarray(probe_labels, dtype=np.int64),
        "gallery": _stack(gallery, image_size),
        "gallery_labels": np.asarray(gallery_labels, dtype=np.int64),
        "verification": _stack(ver, image_size),
        "pairs": (a, b, same),
    }


def _synthetic_groups(s: BenchmarkSettings, image_size: int) -> tuple[dict[str, list[Image.Image]], dict[str, list]]:
    from .zoo.pretrained_base import synthetic_identity_groups

    groups = synthetic_identity_groups()
    need_adapt = s.adapt_identities + s.val_identities
    need_eval = s.eval_identities + s.distractor_identities
    if need_adapt > len(groups.adapt) or need_eval > len(groups.eval):
        raise ValueError(
            f"the synthetic adapt/eval groups hold {len(groups.adapt)}/{len(groups.eval)} identities; asked for "
            f"{need_adapt}/{need_eval}."
        )
    population = groups.population(image_size)
    adapt_ids = list(groups.adapt[: s.adapt_identities])
    val_ids = list(groups.adapt[s.adapt_identities : need_adapt])
    eval_ids = list(groups.eval[: s.eval_identities])
    distr_ids = list(groups.eval[s.eval_identities : need_eval])
    per_eval = s.gallery_images + s.probe_images + s.verification_images
    plan = [(i, s.adapt_images) for i in adapt_ids] + [(i, per_eval) for i in val_ids + eval_ids]
    plan += [(i, s.gallery_images) for i in distr_ids]
    out: dict[str, list[Image.Image]] = {}
    chunk = 64
    for start in tqdm(range(0, len(plan), chunk), desc="rendering synthetic identities", disable=not s.progress):
        part = plan[start : start + chunk]
        ids = torch.tensor([i for i, n in part for _ in range(n)])
        img_ids = torch.tensor([k for _, n in part for k in range(n)])
        pixels = _to_uint8(population.render(ids, img_ids))
        for ident, px in zip(ids.tolist(), pixels):
            out.setdefault(f"synth{ident}", []).append(_pil(px))
    names = {
        "adapt": [f"synth{i}" for i in adapt_ids],
        "val": [f"synth{i}" for i in val_ids],
        "eval": [f"synth{i}" for i in eval_ids],
        "distractors": [f"synth{i}" for i in distr_ids],
    }
    return out, names


def _real_groups(s: BenchmarkSettings) -> tuple[dict[str, list[Image.Image]], dict[str, list], str]:
    from .zoo.real_faces import group_by_identity, load_folder_faces, load_real_faces, split_identities

    if s.real_faces == "olivetti":
        samples, what = load_real_faces("olivetti"), "Olivetti/AT&T faces (real)"
    else:
        samples, what = load_folder_faces(s.real_faces), f"real faces from {s.real_faces}"
    groups = {k: list(v) for k, v in group_by_identity(samples).items()}
    usable = [k for k, v in groups.items() if len(v) >= 3]
    if len(usable) < 8:
        raise ValueError(f"{what}: need >= 8 identities with >= 3 images each, found {len(usable)}.")
    # split_identities' three groups, reused as (validation, adapt, eval)
    split = split_identities(usable, seed=0, fractions=(0.15, 0.45, 0.4))
    eval_all = list(split.eval)
    n_distr = max(1, round(0.25 * len(eval_all)))
    names = {
        "adapt": list(split.adapt),
        "val": list(split.pretrain),
        "eval": eval_all[n_distr:],
        "distractors": eval_all[:n_distr],
    }
    return groups, names, f"{what}, {len(usable)} identities"


def build_data(s: BenchmarkSettings, image_size: int) -> BenchmarkData:
    """Render / load the identities and build the adapt set, gate-calibration images and val/eval splits."""
    probe_sizes = tuple(max(2, round(f * image_size)) for f in s.probe_size_fraction)
    if s.real_faces is None:
        groups, names = _synthetic_groups(s, image_size)
        description = f"procedural {SYNTHETIC_NOTE}, adapt/eval groups disjoint from the base's pretraining group"
        real = False
    else:
        groups, names, description = _real_groups(s)
        real = True
    for name, imgs in groups.items():
        groups[name] = [img.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC) for img in imgs]
    adapt = {k: groups[k] for k in names["adapt"]}
    # gate calibration: sharp adapt images vs the same images degraded like the training degradations
    flat = [img for imgs in adapt.values() for img in imgs]
    rng = np.random.default_rng(1234)
    pick = rng.choice(len(flat), size=min(s.calibration_images, len(flat)), replace=False)
    calib = [flat[i] for i in pick]
    train_sizes = tuple(max(2, round(f * image_size)) for f in s.train_size_fraction)
    splits = {
        "val": _make_split(groups, names["val"], [], s, image_size, probe_sizes, seed=11),
        "eval": _make_split(groups, names["eval"], names["distractors"], s, image_size, probe_sizes, seed=22),
    }
    return BenchmarkData(
        description=description,
        real_faces=real,
        image_size=image_size,
        adapt=adapt,
        calib_sharp=_stack(calib, image_size),
        calib_low=_degrade_all(calib, train_sizes, seed=33),
        splits=splits,
    )


# ------------------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------------------


def _prepare_base(s: BenchmarkSettings, out: Path) -> tuple[str | None, dict[str, Any]]:
    """(base_model for the training config, processor settings). None means the embedded pretrained base."""
    from .zoo.pretrained_base import PretrainSettings, get_pretrained_base

    if s.base == "pretrained":
        get_pretrained_base(progress=s.progress)  # load (or build once and cache) before timing anything
        return None, PretrainSettings().processor_settings()
    if s.base == "random":
        from transformers import ViTConfig, ViTImageProcessor, ViTModel

        path = out / "random-base"
        torch.manual_seed(0)
        config = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        ViTModel(config, add_pooling_layer=True).save_pretrained(path)
        ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
            path
        )
        return str(path), {"image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    from .training import FaceAdapterTrainingConfig
    from .training.modeling import resolve_image_settings

    info = resolve_image_settings(FaceAdapterTrainingConfig(base_model=s.base, train_data="unused"))
    return s.base, {"image_size": info.image_size, "image_mean": info.image_mean, "image_std": info.image_std}


def _load_base(base_model: str | None) -> torch.nn.Module:
    from .training import FaceAdapterTrainingConfig
    from .training.modeling import load_base_model

    return load_base_model(FaceAdapterTrainingConfig(base_model=base_model, progress_bar=False)).eval()


def _load_trained(spec: MethodSpec, base_model: str | None, folder: str) -> torch.nn.Module:
    if spec.finetune_method == "full":
        from transformers import AutoModel

        return AutoModel.from_pretrained(folder).float().eval()
    from peft import PeftModel

    import petal_peft  # noqa: F401

    return PeftModel.from_pretrained(_load_base(base_model), folder).eval()


def _weights_file_size(folder: str) -> int:
    for name in ("adapter_model.safetensors", "model.safetensors"):
        p = Path(folder) / name
        if p.is_file():
            return p.stat().st_size
    return 0


# ------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------


def _normalise(images: torch.Tensor, ps: dict[str, Any]) -> torch.Tensor:
    mean = torch.tensor(ps["image_mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(ps["image_std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _embedder(model: torch.nn.Module, mode: str) -> Any:
    from .evaluation import gated_embedder, plain_embedder, proxy_embedder_from_adapter

    kwargs = {"batch_size": 256, "progress": False}
    if mode == "plain":
        return plain_embedder(model, **kwargs)
    if mode == "gate":
        return gated_embedder(model, **kwargs)
    if mode == "proxy":
        return proxy_embedder_from_adapter(model, **kwargs)
    raise ValueError(f"unknown evaluation mode {mode!r}.")


@torch.no_grad()
def evaluate_split(embedder: Any, split: dict[str, Any], ps: dict[str, Any]) -> dict[str, Any]:
    """LR identification (degraded probes vs sharp gallery + distractors) and sharp 10-fold verification."""
    from .evaluation import closed_set_identification, kfold_verification_accuracy
    from .evaluation.metrics import squared_l2

    probes = embedder.embed(_normalise(split["probes"], ps), role="probe")
    gallery = embedder.embed(_normalise(split["gallery"], ps), role="gallery")
    ident = closed_set_identification(
        probes.embeddings, split["probe_labels"], gallery.embeddings, split["gallery_labels"], ranks=(1, 5, 10, 20)
    )
    ver = embedder.embed(_normalise(split["verification"], ps), role="pair")
    a, b, same = split["pairs"]
    kfold = kfold_verification_accuracy(squared_l2(ver.embeddings[a], ver.embeddings[b]), same, n_folds=10)
    out: dict[str, Any] = {f"rank-{r}": ident.rank_accuracy(r) for r in (1, 5, 10, 20)}
    out["hr_verification"] = kfold.metrics()["accuracy"]
    out["cmc"] = (100.0 * ident.cmc[:50]).tolist()
    if probes.quality is not None:
        out["probe_q_mean"] = float(probes.quality.mean())
        out["gallery_q_mean"] = float(gallery.quality.mean())
    return out


# ------------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------------


def _calibrate(data: BenchmarkData, ps: dict[str, Any]) -> dict[str, Any]:
    from .quality import calibrate_gate, separation_auc
    from .registry import QUALITY_ESTIMATORS

    high, low = _normalise(data.calib_sharp, ps), _normalise(data.calib_low, ps)
    gate = calibrate_gate(
        high, low, estimator="resolution", image_mean=ps["image_mean"], image_std=ps["image_std"], mode="sigmoid"
    )
    est = QUALITY_ESTIMATORS.build("resolution", image_mean=ps["image_mean"], image_std=ps["image_std"])
    with torch.no_grad():
        sh, sl = est(high), est(low)
    gate["separation_auc"] = separation_auc(sh, sl, higher_is_better=True)
    gate["score_sharp_median"] = float(sh.median())
    gate["score_low_median"] = float(sl.median())
    return gate


def _write_adapt_folder(data: BenchmarkData, root: Path) -> Path:
    from .zoo.real_faces import FaceSample, write_train_folder

    folder = root / "adapt-train"
    if folder.exists():
        shutil.rmtree(folder)
    samples = [FaceSample(img, name) for name, imgs in data.adapt.items() for img in imgs]
    return write_train_folder(samples, folder)


def _train_config(
    spec: MethodSpec,
    s: BenchmarkSettings,
    seed: int,
    base_model: str | None,
    train_dir: Path,
    out_dir: Path,
    gate: dict[str, Any],
    ps: dict[str, Any],
) -> Any:
    from .training import FaceAdapterTrainingConfig

    image_size = int(ps["image_size"])
    sizes = [max(2, round(f * image_size)) for f in s.train_size_fraction]
    fields: dict[str, Any] = dict(
        base_model=base_model,
        train_data=str(train_dir),
        output_dir=str(out_dir),
        overwrite_output_dir=True,  # the benchmark's own work folder: a rerun trains afresh
        finetune_method=spec.finetune_method,
        head=s.head,
        head_scale=s.head_scale,
        head_margin=s.head_margin,
        lora_r=s.lora_r,
        lora_alpha=s.lora_r,
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        max_steps=s.steps,
        warmup_steps=max(1, s.steps // 10),
        per_device_train_batch_size=s.batch_size,
        degrade_fraction=s.degrade_fraction,
        degrade_min_size=sizes[0],
        degrade_max_size=sizes[1],
        seed=seed,
        report_to="none",
        eval_before_training=False,
        progress_bar=False,
        logging_steps=max(1, s.steps // 10),
        use_cpu=True,
    )
    if spec.finetune_method == "quality_gated":
        fields.update(
            quality_estimator="resolution",
            gate_mode=gate["gate_mode"],
            gate_threshold=gate["gate_threshold"],
            gate_temperature=gate["gate_temperature"],
        )
    fields.update(spec.overrides)
    return FaceAdapterTrainingConfig(**fields)


def run_benchmark(s: BenchmarkSettings, methods: list[MethodSpec] | None = None) -> dict[str, Any]:
    """Run every method for every seed; returns the results dict (also written to ``<out>/benchmark_results.json``)."""
    from .training import train

    torch.set_num_threads(s.num_threads)
    if not s.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    methods = methods or default_methods()
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    start = time.perf_counter()
    base_model, ps = _prepare_base(s, work)
    data = build_data(s, int(ps["image_size"]))
    gate = _calibrate(data, ps)
    train_dir = _write_adapt_folder(data, work)
    base = _load_base(base_model)
    base_params = sum(p.numel() for p in base.parameters())
    runs: list[dict[str, Any]] = []
    jobs = [(spec, seed) for spec in methods for seed in (s.seeds if spec.finetune_method else s.seeds[:1])]
    bar = tqdm(jobs, desc="benchmark", disable=not s.progress)
    for spec, seed in bar:
        bar.set_postfix(method=spec.name, seed=seed)
        t0 = time.perf_counter()
        info: dict[str, Any] = {"method": spec.name, "seed": seed}
        if spec.finetune_method is None:
            model = base
            info.update(trainable_parameters=0, file_bytes=0, train_s=0.0)
        else:
            config = _train_config(spec, s, seed, base_model, train_dir, work / f"{spec.name}-s{seed}", gate, ps)
            result = train(config)
            model = _load_trained(spec, base_model, result.adapter_dir)
            info.update(
                trainable_parameters=result.trainable_parameters,
                file_bytes=_weights_file_size(result.adapter_dir),
                train_s=result.runtime_s,
                final_loss=result.final_loss,
            )
        for mode in spec.eval_modes:
            row = dict(info, mode=mode)
            for split_name, split in data.splits.items():
                row[split_name] = evaluate_split(_embedder(model, mode), split, ps)
            row["eval_s"] = time.perf_counter() - t0 - info["train_s"]
            runs.append(row)
        if spec.finetune_method is None:  # the untouched model is deterministic: the same for every seed
            for seed2 in s.seeds[1:]:
                runs += [dict(r, seed=seed2) for r in runs if r["method"] == spec.name and r["seed"] == seed]
    results = aggregate(runs, methods, base_params)
    results.update(
        settings=s.to_dict(),
        data=data.description,
        real_faces=data.real_faces,
        synthetic_note=None if data.real_faces else f"data are {SYNTHETIC_NOTE}",
        gate_calibration=gate,
        base_parameters=base_params,
        runtime_s=time.perf_counter() - start,
        runs=runs,
    )
    from .evaluation import write_json_atomic

    write_json_atomic(out / "benchmark_results.json", _finite(results))
    return results


# ------------------------------------------------------------------------------------------------------------
# aggregation, table, plots
# ------------------------------------------------------------------------------------------------------------

_LABELS = {
    ("pretrained", "plain"): "pretrained (untouched)",
    ("full", "plain"): "full fine-tuning",
    ("lora", "plain"): "plain LoRA (PEFT, rank 2r)",
    ("ours", "gate"): "ours: gate per image",
    ("ours", "proxy"): "ours: proxy encoders",
}


def row_label(method: str, mode: str) -> str:
    return _LABELS.get((method, mode), f"{method}: {'gate per image' if mode == 'gate' else mode}")


def _ms(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]], methods: list[MethodSpec], base_params: int) -> dict[str, Any]:
    """Mean ± std per (method, mode) over seeds, paired differences to plain LoRA, and the selected variant."""
    keys = list(dict.fromkeys((r["method"], r["mode"]) for r in runs))
    rows: dict[str, dict[str, Any]] = {}
    pre = {r["seed"]: r for r in runs if r["method"] == "pretrained"}
    for method, mode in keys:
        rs = sorted((r for r in runs if r["method"] == method and r["mode"] == mode), key=lambda r: r["seed"])
        row: dict[str, Any] = {"method": method, "mode": mode, "label": row_label(method, mode), "seeds": len(rs)}
        for split in ("val", "eval"):
            for metric in ("rank-1", "rank-5", "rank-10", "rank-20", "hr_verification"):
                row[f"{split}/{metric}"] = _ms([r[split][metric] for r in rs])
            row[f"{split}/cmc"] = np.mean([r[split]["cmc"] for r in rs], axis=0).tolist()
            if pre:
                for metric in ("rank-1", "hr_verification"):
                    row[f"{split}/delta_{metric}"] = _ms(
                        [r[split][metric] - pre[r["seed"]][split][metric] for r in rs if r["seed"] in pre]
                    )
        row["trainable_parameters"] = int(rs[0]["trainable_parameters"])
        row["trainable_percent"] = 100.0 * row["trainable_parameters"] / base_params
        row["file_bytes"] = int(rs[0]["file_bytes"])
        row["train_s"] = _ms([r["train_s"] for r in rs])
        rows[f"{method}/{mode}"] = row
    # the best quality-gated variant, chosen on the VALIDATION split (adapt-group identities held out)
    variants = {m.name for m in methods if m.is_variant}
    candidates = [k for k, r in rows.items() if r["method"] in variants]
    selected = max(candidates, key=lambda k: rows[k]["val/rank-1"][0]) if candidates else None
    comparisons = {}
    lora = {r["seed"]: r for r in runs if r["method"] == "lora"}
    full = {r["seed"]: r for r in runs if r["method"] == "full"}
    for key in [k for k in ("ours/gate", "ours/proxy") if k in rows] + ([selected] if selected else []):
        method, mode = key.split("/")
        mine = {r["seed"]: r for r in runs if r["method"] == method and r["mode"] == mode}
        for name, other in (("lora", lora), ("full", full)):
            seeds = sorted(set(mine) & set(other))
            if seeds:
                for metric in ("rank-1", "hr_verification"):
                    comparisons[f"{key} - {name}: eval/{metric}"] = _ms(
                        [mine[sd]["eval"][metric] - other[sd]["eval"][metric] for sd in seeds]
                    )
    return {"rows": rows, "selected_variant": selected, "comparisons": comparisons}


def _fmt(ms: tuple[float, float], sign: bool = False) -> str:
    m, sd = ms
    return f"{m:+.2f} ± {sd:.2f}" if sign else f"{m:.2f} ± {sd:.2f}"


def _size(n: int) -> str:
    return "—" if n == 0 else (f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB")


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per (method, mode), mean ± std over seeds, eval group (and val rank-1 for selection)."""
    rows = results["rows"]
    sel = results.get("selected_variant")
    seeds = max(r["seeds"] for r in rows.values())
    note = results.get("synthetic_note") or results.get("data", "")
    lines = [
        f"Data: {results.get('data', '')}. Mean ± std over {seeds} seed(s). LR = degraded probes vs sharp gallery "
        f"with distractors (rank-k, %); HR = sharp 1:1 verification, 10-fold accuracy (%); Δ vs pretrained. "
        f"Val rank-1 = held-out adapt identities (used to pick the best variant, marked *).",
        "",
        "| method | LR rank-1 | LR rank-5 | LR rank-10 | Δ rank-1 | HR verif. | Δ HR | val rank-1 | trainable params "
        "(% of base) | weights file |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        label = r["label"] + (" *" if key == sel else "")
        d1 = _fmt(r["eval/delta_rank-1"], True) if "eval/delta_rank-1" in r else "—"
        dh = _fmt(r["eval/delta_hr_verification"], True) if "eval/delta_hr_verification" in r else "—"
        params = (
            "0" if not r["trainable_parameters"] else f"{r['trainable_parameters']:,} ({r['trainable_percent']:.2f}%)"
        )
        lines.append(
            f"| {label} | {_fmt(r['eval/rank-1'])} | {_fmt(r['eval/rank-5'])} | {_fmt(r['eval/rank-10'])} | {d1} | "
            f"{_fmt(r['eval/hr_verification'])} | {dh} | {_fmt(r['val/rank-1'])} | {params} | "
            f"{_size(r['file_bytes'])} |"
        )
    if results.get("comparisons"):
        lines += ["", "Paired differences (same seed), eval group, mean ± std over seeds:", ""]
        lines += [f"- {k}: {_fmt(v, True)}" for k, v in results["comparisons"].items()]
    if note and "not faces" in str(note):
        lines += ["", f"All numbers above are on {SYNTHETIC_NOTE}."]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _data_tag(results: dict[str, Any]) -> str:
    return SYNTHETIC_NOTE if not results.get("real_faces") else "real faces"


def plot_cmc(results: dict[str, Any], path: Path, max_rank: int = 20) -> Path:
    """CMC (eval group, mean over seeds) per (method, mode)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in results["rows"].values():
        cmc = np.asarray(r["eval/cmc"])[:max_rank]
        style = "--" if r["method"] in ("pretrained", "full", "lora") else "-"
        ax.plot(
            np.arange(1, len(cmc) + 1), cmc, style, marker="o", markersize=2.5, label=f"{r['label']} (R1 {cmc[0]:.1f})"
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title(f"Low-res probes vs high-res gallery, CMC\n({_data_tag(results)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_forgetting(results: dict[str, Any], path: Path) -> Path:
    """Two panels: change of LR rank-1 and of HR verification accuracy vs the pretrained model (error = std)."""
    plt = _pyplot()
    rows = [r for r in results["rows"].values() if r["method"] != "pretrained" and "eval/delta_rank-1" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = [r["label"] for r in rows]
    y = np.arange(len(rows))
    for ax, metric, title in (
        (axes[0], "eval/delta_rank-1", "LR rank-1 change vs pretrained (points)"),
        (axes[1], "eval/delta_hr_verification", "HR verification change vs pretrained (points)"),
    ):
        means = [r[metric][0] for r in rows]
        stds = [r[metric][1] for r in rows]
        colors = [
            "tab:red" if r["method"] == "full" else "tab:gray" if r["method"] == "lora" else "tab:blue" for r in rows
        ]
        ax.barh(y, means, xerr=stds, color=colors, alpha=0.8, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        if "hr" in metric:
            ax.axvline(-0.5, color="k", lw=0.8, ls=":", label="-0.5 points")
            ax.legend(loc="lower left", fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.suptitle(f"Gain on low resolution vs forgetting on high resolution ({_data_tag(results)})", fontsize=10)
    out = _save(fig, path)
    plt.close(fig)
    return out


def write_outputs(
    results: dict[str, Any], out: str | os.PathLike, docs_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Table (markdown), results JSON, CMC and forgetting PNGs into ``out`` (and ``docs_dir`` as benchmark_*)."""
    from .evaluation import write_json_atomic

    written = []
    for folder in [Path(out)] + ([Path(docs_dir)] if docs_dir else []):
        folder.mkdir(parents=True, exist_ok=True)
        table = folder / "benchmark_table.md"
        tmp = table.with_name(".benchmark_table.md.tmp")
        tmp.write_text(format_table(results))
        os.replace(tmp, table)
        slim = {k: v for k, v in results.items() if k != "runs"} if docs_dir and folder == Path(docs_dir) else results
        write_json_atomic(folder / "benchmark_results.json", _finite(slim))
        written += [table, folder / "benchmark_results.json"]
        written.append(plot_cmc(results, folder / "benchmark_cmc.png"))
        written.append(plot_forgetting(results, folder / "benchmark_forgetting.png"))
    return written


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def save_json(obj: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(_finite(obj), indent=2))
