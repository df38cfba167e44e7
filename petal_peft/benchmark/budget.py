"""How long a run will take, and how many training steps fit in a time budget, measured on this machine.

A few optimiser steps per trained row (random images of the base's size, the real batch and head size) and a
few embedding batches per evaluation mode are timed with the real base; the run's cost is then the sum over its
jobs: every trained row x seed (setup + steps x step time), every evaluation (images x forward time, flip test
included), the reference rows and the data preparation. Timings on a machine shared with other jobs are
pessimistic; ``os.getloadavg()`` is recorded with them.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .methods import MethodSpec
from .settings import BenchmarkSettings

__all__ = ["RunCosts", "compare_objective_steps", "estimate_runtime", "measure_costs", "steps_for_budget"]


@dataclass
class RunCosts:
    """Measured seconds (wall, this machine, now): per optimiser step per row, per embedded image per mode."""

    step_s: dict[str, float] = field(default_factory=dict)  # row name -> s per step at the settings' batch
    setup_s: float = 5.0  # per training: loading the base, building the adapter and head, writing the adapter
    image_s: dict[str, float] = field(default_factory=dict)  # "plain" / "lora" / "gate" / "proxy" -> s per image
    reference_image_s: dict[str, float] = field(default_factory=dict)  # reference name -> s per image
    data_image_s: float = 0.0  # reading + preparing + degrading one image
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _time(fn, repeats: int) -> float:
    times = sorted(timed(fn, repeats))
    return times[len(times) // 2]


def _eval_key(spec: MethodSpec, mode: str) -> str:
    if mode == "plain" and spec.finetune_method == "lora":
        return "lora"  # an unmerged PEFT LoRA costs more than the plain base
    return mode


def measure_costs(
    s: BenchmarkSettings,
    methods: list[MethodSpec],
    base_model: str | None,
    ps: dict[str, Any],
    num_classes: int,
    sample_images: torch.Tensor | None = None,
    repeats: int = 2,
    num_images: int | None = None,
) -> RunCosts:
    """Time training steps and embedding for ``methods`` on the base (random adapters, random images); a
    distillation row's step reads ``num_images`` cached targets, as in a real run."""
    from ..heads import build_head
    from ..training.modeling import BaseModelInfo, FaceEmbeddingClassifier, build_backbone, embedding_size
    from ..training.objectives import ObjectiveLoss, uses_distillation
    from .evaluate import model_embedder
    from .methods import all_linear_targets, resolve_target_set, train_config
    from .models import load_base
    from .reference import REFERENCE_MODELS

    torch.set_num_threads(s.num_threads)
    size = int(ps["image_size"])
    info = BaseModelInfo("base", size, list(ps["image_mean"]), list(ps["image_std"]), False)
    base = load_base(base_model)
    all_linear = all_linear_targets(base)
    target_set = resolve_target_set(base, s.targets)
    dim = embedding_size(base, size)
    gate = {"gate_mode": "sigmoid", "gate_threshold": 0.0, "gate_temperature": 1.0}
    costs = RunCosts(load_average=tuple(os.getloadavg()))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch_size, 3, size, size, generator=g)
    labels = torch.randint(0, num_classes, (s.batch_size,), generator=g)
    # distillation reads cached teacher targets: random ones of the same shape cost the same
    n_images = max(num_images or 0, s.batch_size)
    targets = torch.randn(n_images, 2, dim, generator=g)
    batch = {
        "pixel_values": x,
        "labels": labels,
        "index": torch.randperm(n_images, generator=g)[: s.batch_size],
        "flipped": torch.rand(s.batch_size, generator=g) < 0.5,
    }
    eval_images = torch.randint(0, 256, (min(64, s.eval_batch_size), 3, size, size), generator=g, dtype=torch.uint8)
    models: dict[str, torch.nn.Module] = {"plain": base}
    for spec in methods:
        if not spec.trained:
            continue
        config = train_config(spec, s, 0, base_model, "unused", "unused/run", gate, size, all_linear, target_set)
        backbone = build_backbone(copy.deepcopy(base), config, info)
        head = None
        if config.objective != "distill":
            head = build_head(config.head, embedding_size=dim, num_classes=num_classes, s=s.head_scale, m=s.head_margin)
        loss_fn = ObjectiveLoss(
            config.objective, config.distill_weight, targets if uses_distillation(config.objective) else None
        )
        model = FaceEmbeddingClassifier(backbone, head).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-6)
        quality = torch.rand(s.batch_size, generator=g) if spec.finetune_method == "quality_gated" else None

        source = "degradation" if quality is not None else "none"
        row_batch = dict(batch, quality_level=quality) if quality is not None else batch

        def step(model=model, optimizer=optimizer, b=row_batch, src=source, trainable=trainable, loss_fn=loss_fn):
            loss_fn(model, b, src).backward()
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        costs.step_s[spec.name] = _time(step, repeats)
        if spec.finetune_method == "lora":
            models.setdefault("lora", backbone.eval())
        elif spec.finetune_method == "quality_gated":
            models.setdefault("gate", backbone.eval())
    if "gate" in models:
        models["proxy"] = models["gate"]
    for key, model in models.items():
        embed = model_embedder(model, "plain" if key == "lora" else key, ps, s.eval_batch_size, s.flip_test)
        costs.image_s[key] = _time(lambda embed=embed: embed(eval_images, "probe"), repeats) / len(eval_images)
    for name in s.references:
        if any(m.reference == name for m in methods) and sample_images is not None:
            reference = REFERENCE_MODELS.build(name, num_workers=s.num_threads, progress=False)
            t = time.perf_counter()
            reference.embed(sample_images)
            costs.reference_image_s[name] = (time.perf_counter() - t) / len(sample_images)
    return costs


def estimate_runtime(
    s: BenchmarkSettings, methods: list[MethodSpec], costs: RunCosts, counts: dict[str, int], steps: int | None = None
) -> dict[str, float]:
    """Seconds per part of a run of ``methods`` with ``steps`` (default ``s.steps``): training, evaluation,
    reference rows, data; ``counts``: images embedded per split (``{"val": ..., "eval": ...}``) and
    ``"data"``, the images read and prepared."""
    steps = s.steps if steps is None else steps
    seeds = len(s.seeds)
    out = {"data": counts.get("data", 0) * costs.data_image_s, "train": 0.0, "eval": 0.0, "reference": 0.0}
    for spec in methods:
        if spec.reference is not None:
            out["reference"] += counts["eval"] * costs.reference_image_s.get(spec.reference, 0.0)
            continue
        runs = seeds if spec.trained else 1
        if spec.trained:
            out["train"] += runs * (costs.setup_s + steps * costs.step_s[spec.name])
        splits = ("val", "eval") if (s.validation_rows == "all" or spec.is_variant) else ("eval",)
        images = sum(counts[k] for k in splits)
        for mode in spec.eval_modes:
            out["eval"] += runs * images * costs.image_s[_eval_key(spec, mode)]
    out["total"] = sum(out.values())
    return out


def steps_for_budget(
    s: BenchmarkSettings, methods: list[MethodSpec], costs: RunCosts, counts: dict[str, int], seconds: float
) -> int:
    """The most training steps per row whose whole run fits in ``seconds`` (0 if even no training does not)."""
    fixed = estimate_runtime(s, methods, costs, counts, steps=0)["total"]
    per_step = estimate_runtime(s, methods, costs, counts, steps=1)["total"] - fixed
    if per_step <= 0:
        raise ValueError("no trained row: the step count does not change the run time.")
    return max(0, int((seconds - fixed) // per_step))


def compare_objective_steps(
    s: BenchmarkSettings,
    base_model: str | None,
    ps: dict[str, Any],
    num_classes: int,
    num_images: int,
    repeats: int = 5,
) -> dict[str, dict[str, float]]:
    """Seconds per optimiser step of each objective in ``s.objectives``, per adapter kind (ours, plain LoRA), at
    the settings' batch, targets and head; the steps of the objectives alternate so that a machine whose load
    changes slows them alike. ``ratio_<objective>``: its median over the margin step's median."""
    from ..heads import build_head
    from ..training.modeling import BaseModelInfo, FaceEmbeddingClassifier, build_backbone, embedding_size
    from ..training.objectives import ObjectiveLoss, uses_distillation
    from .methods import MethodSpec, all_linear_targets, resolve_target_set, train_config
    from .models import load_base

    torch.set_num_threads(s.num_threads)
    size = int(ps["image_size"])
    info = BaseModelInfo("base", size, list(ps["image_mean"]), list(ps["image_std"]), False)
    base = load_base(base_model)
    all_linear, target_set = all_linear_targets(base), resolve_target_set(base, s.targets)
    dim = embedding_size(base, size)
    gate = {"gate_mode": "sigmoid", "gate_threshold": 0.0, "gate_temperature": 1.0}
    g = torch.Generator().manual_seed(0)
    n = max(num_images, s.batch_size)
    batch = {
        "pixel_values": torch.randn(s.batch_size, 3, size, size, generator=g),
        "labels": torch.randint(0, num_classes, (s.batch_size,), generator=g),
        "index": torch.randperm(n, generator=g)[: s.batch_size],
        "flipped": torch.rand(s.batch_size, generator=g) < 0.5,
        "quality_level": torch.rand(s.batch_size, generator=g),
    }
    targets = torch.randn(n, 2, dim, generator=g)
    out: dict[str, dict[str, float]] = {}
    for kind, method in (("ours", "quality_gated"), ("lora", "lora")):
        spec = MethodSpec(kind, method)
        config = train_config(spec, s, 0, base_model, "unused", "unused/run", gate, size, all_linear, target_set)
        backbone = build_backbone(copy.deepcopy(base), config, info)
        head = build_head(config.head, embedding_size=dim, num_classes=num_classes, s=s.head_scale, m=s.head_margin)
        model = FaceEmbeddingClassifier(backbone, head).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-6)
        source = "degradation" if method == "quality_gated" else "none"
        losses = {
            o: ObjectiveLoss(o, s.distill_weight, targets if uses_distillation(o) else None) for o in s.objectives
        }
        times: dict[str, list[float]] = {o: [] for o in losses}
        for r in range(repeats + 1):
            for objective, loss_fn in losses.items():
                t = time.perf_counter()
                loss_fn(model, batch, source).backward()
                torch.nn.utils.clip_grad_norm_(trainable, 5.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if r:  # the first round warms up
                    times[objective].append(time.perf_counter() - t)
        medians = {o: sorted(v)[len(v) // 2] for o, v in times.items()}
        row = {f"{o}_step_s": round(m, 4) for o, m in medians.items()}
        if "margin" in medians:
            row.update({f"ratio_{o}": round(m / medians["margin"], 3) for o, m in medians.items() if o != "margin"})
        out[kind] = row
    return out
