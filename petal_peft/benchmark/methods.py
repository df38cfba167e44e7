"""The rows of the benchmark: which model is trained how, and how each is evaluated.

Every trained row goes through :func:`petal_peft.training.train` with the same data, steps, batch, optimiser,
head and seeds; only ``finetune_method`` and the row's ``overrides`` differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from .settings import BenchmarkSettings

__all__ = [
    "ALL_LINEAR",
    "MethodSpec",
    "all_linear_targets",
    "default_methods",
    "per_objective",
    "resolve_target_set",
    "select_methods",
    "train_config",
]

#: ``overrides["target_modules"]`` value meaning "every nn.Linear of the base", resolved per architecture
ALL_LINEAR = "all-linear"


def all_linear_targets(base: nn.Module) -> list[str]:
    """Every ``nn.Linear`` of ``base`` as PEFT target names: the module-name suffix where no other kind of module
    shares it (``q_proj``, ``fc1``, ...), else the full name (e.g. a Linear and a Conv2d both called
    ``projection``)."""
    kinds: dict[str, set[bool]] = {}
    linear_names = []
    for name, module in base.named_modules():
        if not name:
            continue
        suffix = name.rsplit(".", 1)[-1]
        is_linear = isinstance(module, nn.Linear)
        kinds.setdefault(suffix, set()).add(is_linear)
        if is_linear:
            linear_names.append(name)
    if not linear_names:
        raise ValueError(f"{type(base).__name__} has no nn.Linear layer to adapt.")
    targets = {n.rsplit(".", 1)[-1] if kinds[n.rsplit(".", 1)[-1]] == {True} else n for n in linear_names}
    return sorted(targets)


@dataclass
class MethodSpec:
    """One row: a trained, untouched or reference model, and the ways it is evaluated.

    ``finetune_method`` None means not trained: the base untouched, or, with ``reference``, a reference model
    from :data:`petal_peft.benchmark.REFERENCE_MODELS` (e.g. the dlib descriptor) evaluated on the same images.
    ``eval_modes``: ``plain``, ``gate`` (the adapter gated per image) and ``proxy`` (merged proxy encoders).
    """

    name: str
    finetune_method: str | None  # None: not trained
    eval_modes: tuple[str, ...] = ("plain",)
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    is_variant: bool = False  # a quality-gated variant that competes for "best gate variant"
    reference: str | None = None  # a REFERENCE_MODELS name (then finetune_method is None)

    def __post_init__(self) -> None:
        if self.reference is not None and self.finetune_method is not None:
            raise ValueError(f"method {self.name!r}: a reference row is not trained (finetune_method must be None).")
        if "/" in self.name or not self.name:
            raise ValueError(f"method name {self.name!r} must be non-empty and contain no '/'.")

    @property
    def trained(self) -> bool:
        return self.finetune_method is not None


def default_methods(references: tuple[str, ...] = ()) -> list[MethodSpec]:
    """Pretrained, full FT, plain LoRA, three variants of ours (estimator/calibration/targets), references."""
    methods = [
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
            {"quality_source": "estimator", "target_modules": ALL_LINEAR},
            "quality-gated on every linear layer of the base (attention, MLP, embedding head): more parameters",
            True,
        ),
    ]
    for name in references:
        methods.append(MethodSpec(f"{name}-reference", None, reference=name, description=f"reference model {name!r}"))
    return methods


def per_objective(methods: list[MethodSpec], objectives: tuple[str, ...]) -> list[MethodSpec]:
    """Each trained row once per objective: ``margin`` keeps the row's name, another objective appends it
    (``ours-distill``, ``lora-margin+distill``); untouched and reference rows once."""
    out = []
    for spec in methods:
        if not spec.trained:
            out.append(spec)
            continue
        for objective in objectives:
            if objective == "margin":
                out.append(spec)
                continue
            out.append(
                replace(
                    spec,
                    name=f"{spec.name}-{objective}",
                    overrides={**spec.overrides, "objective": objective},
                    description=f"{spec.description}; objective {objective}",
                )
            )
    return out


def select_methods(s: BenchmarkSettings) -> list[MethodSpec]:
    """The default rows named in ``s.rows`` (all when empty), in their usual order, each trained one per
    objective of ``s.objectives``, plus ``s.references``."""
    methods = default_methods(s.references)
    unknown = sorted(set(s.rows) - {m.name for m in methods})
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {[m.name for m in methods if m.reference is None]}.")
    chosen = [m for m in methods if not s.rows or m.name in s.rows or m.reference is not None]
    chosen = [
        replace(m, eval_modes=tuple(x for x in m.eval_modes if x in s.gated_modes) or m.eval_modes[:1])
        if m.finetune_method == "quality_gated"
        else m
        for m in chosen
    ]
    return per_objective(chosen, s.objectives)


def resolve_target_set(base: nn.Module, name: str) -> list[str] | None:
    """The target modules a named set stands for on ``base``: ``default`` (None: the per-architecture default),
    ``all-linear`` (:func:`all_linear_targets`), or a layer-group expression the base's model family registers
    (``stem+default``, ``stem+all-linear`` on the real-face base: see :func:`petal_peft.tuner.target_module_groups`),
    kept as the expression, which the adapter resolves."""
    from ..tuner.targets import resolve_target_modules, target_module_groups

    if name == "default":
        return None
    groups = target_module_groups(base)
    if name == ALL_LINEAR and ALL_LINEAR not in groups:
        return all_linear_targets(base)
    try:
        resolved = resolve_target_modules(base, [name])
    except ValueError as err:
        raise ValueError(f"--targets {name}: {err}") from None
    if resolved == [name]:  # not a group expression of this base
        known = list(dict.fromkeys(["default", ALL_LINEAR, *sorted(groups)]))
        raise ValueError(f"unknown target set {name!r} for {type(base).__name__}; known: {known} (groups join with +).")
    return [name]


def train_config(
    spec: MethodSpec,
    s: BenchmarkSettings,
    seed: int,
    base_model: str | None,
    train_dir: Path,
    out_dir: Path,
    gate: dict[str, Any],
    image_size: int,
    all_linear: list[str] | None = None,
    target_set: list[str] | None = None,
) -> Any:
    """The FaceAdapterTrainingConfig of one (row, seed): the shared budget plus the row's overrides
    (``all_linear``: what :data:`ALL_LINEAR` stands for on this base, see :func:`all_linear_targets`)."""
    from ..training import FaceAdapterTrainingConfig

    sizes = s.capture_sizes("train", image_size)
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
    if target_set is not None and spec.finetune_method != "full":
        fields["target_modules"] = list(target_set)
    fields.update(objective="margin", head_init=s.head_init, distill_weight=s.distill_weight)
    fields.update(spec.overrides)
    if fields["objective"] != "margin":
        fields["degrade_fraction"] = s.distill_degrade_fraction  # sharp and degraded images in each batch
        # the frozen base's targets, shared by every row and seed of the run (same base, same images)
        fields["teacher_cache"] = str(Path(out_dir).parent / "teacher_targets.safetensors")
    if fields["objective"] == "distill":
        fields["head_init"] = "random"  # no head to start
    elif fields["head_init"] == "imprint":
        fields["teacher_cache"] = str(Path(out_dir).parent / "teacher_targets.safetensors")
    if fields.get("target_modules") == ALL_LINEAR:
        if not all_linear:
            raise ValueError(f"method {spec.name!r} adapts every linear layer: pass all_linear_targets(base).")
        fields["target_modules"] = list(all_linear)
    return FaceAdapterTrainingConfig(**fields)
