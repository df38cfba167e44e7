"""``train(config)``: adapt a pretrained face transformer with a quality-gated adapter, using Accelerate.

One CPU, one GPU or many (``accelerate launch`` / ``torchrun``), mixed precision, gradient accumulation,
gradient checkpointing, atomic resumable checkpoints, TensorBoard metrics, periodic evaluation, and a final
``adapter/`` folder (adapter + head + training_config.json + metrics.json + model card) written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_directory
from .checkpointing import CheckpointManager, LoadedCheckpoint, TrainingProgress, TrainingState
from .config import FaceAdapterTrainingConfig
from .data import build_train_dataloader, build_train_dataset
from .evaluation_hook import EvaluationHook, PlainTinyFaceEvaluationHook, TinyFaceEvaluationHook, preserved_rng
from .gate_calibration import calibrate_training_gate, config_with_gate, describe_gate
from .loop import Schedule, TrainingLoop, build_schedule, numeric_metrics, run_training_loop
from .model_card import adapter_model_card, baseline_model_card, push_adapter_folder
from .modeling import (
    BaseModelInfo,
    FaceEmbeddingClassifier,
    backbone_parameter_counts,
    build_backbone,
    embedding_size,
    load_base_model,
    resolve_image_settings,
)
from .objective_setup import build_objective, objective_dataset
from .run_guard import (
    OutputDirError,
    check_output_dir,
    check_output_dir_path,
    compare_run_records,
    data_fingerprint,
    output_dir_lock,
    previous_run_parts,
)

__all__ = ["TrainResult", "format_metrics_table", "train"]

logger = logging.getLogger(__name__)

ADAPTER_DIRNAME = "adapter"
SKIPPED_IMAGES_NAME = "skipped_images.txt"
#: the order in which the before/after table lists the TinyFace metrics (others follow as reported)
HEADLINE_METRICS = ("rank-1", "rank-5", "rank-10", "rank-20", "mAP")


@dataclass
class TrainResult:
    """What a run produced (on every process; paths and metrics are filled on the main process)."""

    output_dir: str
    adapter_dir: str | None
    global_step: int
    total_steps: int
    final_loss: float | None
    metrics_before: dict[str, Any] = field(default_factory=dict)
    metrics_after: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None
    hub_url: str | None = None
    runtime_s: float = 0.0
    train_description: str = ""
    finetune_method: str = "quality_gated"
    #: trainable backbone parameters (adapter, or every weight for full fine-tuning) and all backbone parameters
    trainable_parameters: int = 0
    total_parameters: int = 0
    #: optimizer steps run by this call (global_step minus the step a resumed run started at)
    steps_run: int = 0


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def format_metrics_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A small before/after text table of the numeric metrics (rank-1, 5, 10, 20, mAP first); a side that was
    not measured gets no column, and a note says why."""
    b, a = _numeric_metrics(before or {}), _numeric_metrics(after or {})
    if not a and not b:
        return "(no evaluation set: no metrics)"
    names = [n for n in HEADLINE_METRICS if n in a or n in b]
    names += [n for n in (*a, *b) if n not in names]
    names = list(dict.fromkeys(names))
    columns = [(label, side) for label, side in (("before", b), ("after", a)) if side]
    header = f"{'metric':<10}" + "".join(f" {label:>9}" for label, _ in columns)
    lines = [header + (f" {'change':>9}" if len(columns) == 2 else "")]
    for name in names:
        cells = [f"{side[name]:9.2f}" if name in side else f"{'n/a':>9}" for _, side in columns]
        line = f"{name:<10} " + " ".join(cells)
        if len(columns) == 2 and name in a and name in b:
            line += f" {a[name] - b[name]:+9.2f}"
        lines.append(line)
    if not a:
        lines.append("(not evaluated after training: no evaluation set in this run)")
    elif not b:
        lines.append("(not evaluated before training)")
    mode = (after or {}).get("mode") or (before or {}).get("mode")
    if mode:
        lines.append(f"(embedding mode: {mode})")
    return "\n".join(lines)


def _tracker_config(config: FaceAdapterTrainingConfig) -> dict[str, Any]:
    """TensorBoard's hparams accept only scalars and strings."""
    out = {}
    for key, value in config.to_dict().items():
        out[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def _check_tracker_available(report_to: str) -> None:
    """Accelerate only warns and drops a tracker it cannot import; say so before training instead."""
    import importlib.util

    if report_to == "tensorboard" and not any(
        importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")
    ):
        raise ValueError("--report_to tensorboard needs `pip install tensorboard` (or pass --report_to none).")


def _use_cpu(config: FaceAdapterTrainingConfig) -> bool:
    """Accelerate treats a torchrun launch as multi-process only for GPUs unless told it is a CPU run."""
    if config.use_cpu:
        return True
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) != -1
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return launched and not has_gpu


def _sources(config: FaceAdapterTrainingConfig, image_size: int) -> tuple[str, str | None, str]:
    """(train data, eval data, description of the training data)."""
    if config.train_data is not None:
        return config.train_data, config.eval_data, str(config.train_data)
    if config.base_model is not None:
        raise ValueError(
            "--train_data is required with --base_model (the embedded face set exists only for the embedded "
            "default base); run with neither for the embedded default."
        )
    from ..recipes.synthetic_base import base_cache_dir
    from .embedded import prepare_embedded_data

    data = prepare_embedded_data(base_cache_dir(), image_size=image_size, seed=0)
    eval_data = config.eval_data if config.eval_data is not None else data.eval_dir
    return data.train_dir, eval_data, data.description


def train(config: FaceAdapterTrainingConfig, evaluation_hook: EvaluationHook | None = None) -> TrainResult:
    """Train the adapter and head described by ``config``; see docs/training.md.

    The run's steps: :func:`_prepare_data`, :func:`_build_model`, :func:`~petal_peft.training.loop.build_schedule`,
    resume, :func:`~petal_peft.training.loop.run_training_loop` (whose objective is
    :func:`~petal_peft.training.loop.training_loss`), the final evaluation and :func:`_save_run`.

    ``evaluation_hook`` replaces the default TinyFace evaluation on ``config.eval_data``. Problems with the
    output folder, the checkpoint to resume and the data raise before the model is even loaded. The main
    process holds an exclusive lock on ``output_dir`` for the whole run (a second run into it fails at once).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    import petal_peft  # noqa: F401  (registers the adapter type, estimators and gates)

    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    check_output_dir_path(output_dir, fresh=not config.resume_from_checkpoint)
    config.resolved_quality_source()  # no quality for the gate -> error before anything else
    # Accelerate keeps one process-wide state; a second train() in the same process (a benchmark, a notebook)
    # may ask for another precision. The process-group part (PartialState) is kept.
    AcceleratorState._reset_state()
    _check_tracker_available(config.report_to)
    accelerator = Accelerator(
        cpu=_use_cpu(config),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    with output_dir_lock(output_dir, enabled=accelerator.is_main_process):
        return _train(config, accelerator, evaluation_hook, start)


def _resume_target(
    config: FaceAdapterTrainingConfig, checkpoints: CheckpointManager, accelerator: Any
) -> LoadedCheckpoint | None:
    """The checkpoint to resume (read whole; ``latest`` skips damaged ones), after checking that a fresh start
    would not mix with another run left in the output folder."""
    spec = config.resume_from_checkpoint
    if spec and config.overwrite_output_dir:
        raise OutputDirError("--overwrite_output_dir and --resume_from_checkpoint contradict each other: pick one.")
    loaded = checkpoints.resolve(spec) if spec else None
    if spec and loaded is None:
        parts = previous_run_parts(config.output_dir)
        if parts:
            raise OutputDirError(
                f"--resume_from_checkpoint {spec}: no usable checkpoint in {checkpoints.root}, but "
                f"{config.output_dir} holds a run ({'; '.join(parts)}). Pass --overwrite_output_dir instead to "
                "start afresh there, or choose another --output_dir."
            )
        if accelerator.is_main_process:
            print(f"--resume_from_checkpoint {spec}: no checkpoint yet, starting from scratch.")
    own = loaded is not None and loaded.path.resolve().parent == checkpoints.root.resolve()
    check_output_dir(
        config.output_dir,
        resuming=own,
        overwrite=config.overwrite_output_dir,
        clear=accelerator.is_main_process,
    )
    accelerator.wait_for_everyone()
    return loaded


@dataclass
class _RunData:
    """Step 1 of a run: the checked inputs, the training data and the evaluation hook."""

    record: dict[str, Any]
    checkpoints: CheckpointManager
    loaded: LoadedCheckpoint | None
    info: BaseModelInfo
    train_dataset: Any
    train_loader: Any
    sampler: Any
    train_description: str
    evaluation_hook: EvaluationHook | None
    #: the gate of a quality-gated adapter with an estimator: calibrated or checked (see gate_calibration.py)
    gate: dict[str, Any] | None = None


@dataclass
class _RunModel:
    """Step 2: the model (backbone with adapter + head) and its optimizer, prepared by Accelerate."""

    model: torch.nn.Module
    optimizer: Any
    train_loader: Any
    raw_model: torch.nn.Module
    raw_optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    trainable_parameters: int
    total_parameters: int
    loss_fn: Any  # the objective's loss of one batch (petal_peft.training.objectives.ObjectiveLoss)


def _train(
    config: FaceAdapterTrainingConfig, accelerator: Any, evaluation_hook: EvaluationHook | None, start: float
) -> TrainResult:
    from accelerate.utils import set_seed

    output_dir = Path(config.output_dir)
    main = accelerator.is_main_process
    set_seed(config.seed)
    quality_source = config.resolved_quality_source()
    data = _prepare_data(config, accelerator, evaluation_hook)
    parts = _build_model(config, accelerator, data)
    schedule = build_schedule(config, len(parts.train_loader), parts.raw_optimizer)

    # ---- 4. checkpoints and resume --------------------------------------------------------------------------
    progress = TrainingProgress()
    state = TrainingState(
        parts.raw_model, parts.raw_optimizer, schedule.scheduler, progress, getattr(accelerator, "scaler", None)
    )
    resumed_from = None
    if data.loaded is not None:
        data.checkpoints.load(data.loaded, state)
        resumed_from = str(data.loaded.path)
        if progress.batches_in_epoch >= schedule.batches_per_epoch:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
        if main:
            print(f"Resumed from {data.loaded.path} at step {progress.global_step} of {schedule.total_steps}.")
    first_step = progress.global_step

    def evaluate() -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if data.evaluation_hook is not None and main:
            with preserved_rng():
                metrics = dict(data.evaluation_hook(accelerator.unwrap_model(parts.model).backbone))
        accelerator.wait_for_everyone()
        return metrics

    if config.report_to != "none":
        accelerator.init_trackers("petal-peft", config=_tracker_config(config))
    if progress.global_step == 0 and not progress.metrics_before and config.eval_before_training:
        progress.metrics_before = evaluate()
        if progress.metrics_before:
            accelerator.log(numeric_metrics("eval", progress.metrics_before), step=0)

    # ---- 5. the loop ----------------------------------------------------------------------------------------
    run_training_loop(
        TrainingLoop(
            config=config,
            accelerator=accelerator,
            model=parts.model,
            optimizer=parts.optimizer,
            train_loader=parts.train_loader,
            sampler=data.sampler,
            train_dataset=data.train_dataset,
            trainable=parts.trainable,
            schedule=schedule,
            progress=progress,
            checkpoints=data.checkpoints,
            state=state,
            evaluate=evaluate,
            quality_source=quality_source,
            loss_fn=parts.loss_fn,
        )
    )

    # ---- 6. final evaluation and atomic save -----------------------------------------------------------------
    metrics_after = evaluate()
    if metrics_after:
        accelerator.log(numeric_metrics("eval", metrics_after), step=progress.global_step)
    adapter_dir = output_dir / ADAPTER_DIRNAME
    hub_url = None
    if main:
        hub_url = _save_run(config, accelerator, data, parts, schedule, progress, metrics_after, quality_source)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        output_dir=str(output_dir),
        adapter_dir=str(adapter_dir) if main else None,
        global_step=progress.global_step,
        total_steps=schedule.total_steps,
        final_loss=progress.last_loss,
        metrics_before=progress.metrics_before,
        metrics_after=metrics_after,
        resumed_from=resumed_from,
        hub_url=hub_url,
        runtime_s=time.perf_counter() - start,
        train_description=data.train_description,
        finetune_method=config.finetune_method,
        trainable_parameters=parts.trainable_parameters,
        total_parameters=parts.total_parameters,
        steps_run=progress.global_step - first_step,
    )


def _prepare_data(
    config: FaceAdapterTrainingConfig, accelerator: Any, evaluation_hook: EvaluationHook | None
) -> _RunData:
    """Step 1: inputs validated before anything heavy (output folder, checkpoint, data), then the data loader."""
    output_dir = Path(config.output_dir)
    main = accelerator.is_main_process
    record: dict[str, Any] = {"training_config": config.to_dict(), "num_processes": accelerator.num_processes}
    checkpoints = CheckpointManager(output_dir / "checkpoints", accelerator, config.checkpoints_total_limit, record)
    loaded = _resume_target(config, checkpoints, accelerator)
    if loaded is not None:
        compare_run_records(loaded.run_record, record, loaded.path)
    info = resolve_image_settings(config)
    if main:  # the embedded folders are written once, by one process
        train_source, eval_source, train_description = _sources(config, info.image_size)
    accelerator.wait_for_everyone()
    if not main:
        train_source, eval_source, train_description = _sources(config, info.image_size)
    train_dataset = build_train_dataset(config, train_source, info.image_size, info.image_mean, info.image_std)
    skipped = list(getattr(train_dataset, "skipped_images", []))
    if skipped and main:
        (output_dir / SKIPPED_IMAGES_NAME).write_text("\n".join(skipped) + "\n", encoding="utf-8")
        print(
            f"Skipped {len(skipped)} unreadable training image(s) (--skip_corrupt_images); the list is in "
            f"{output_dir / SKIPPED_IMAGES_NAME}."
        )
    gate = calibrate_training_gate(config, train_dataset, info.image_size, info.image_mean, info.image_std)
    if gate and gate["calibrated"] and main:
        print(describe_gate(gate))
    record["train_data"] = data_fingerprint(train_dataset)
    if loaded is not None:
        compare_run_records(loaded.run_record, record, loaded.path)
    train_dataset = objective_dataset(config, train_dataset)
    train_loader, sampler = build_train_dataloader(config, train_dataset, accelerator.num_processes)
    if evaluation_hook is None and eval_source is not None:
        hook_class = (
            TinyFaceEvaluationHook if config.finetune_method == "quality_gated" else PlainTinyFaceEvaluationHook
        )
        evaluation_hook = hook_class(
            eval_source,
            info.image_size,
            info.image_mean,
            info.image_std,
            batch_size=config.eval_batch_size,
            progress=False,
        )
    return _RunData(
        record,
        checkpoints,
        loaded,
        info,
        train_dataset,
        train_loader,
        sampler,
        train_description,
        evaluation_hook,
        gate,
    )


def _build_model(config: FaceAdapterTrainingConfig, accelerator: Any, data: _RunData) -> _RunModel:
    """Step 2: the frozen base with its adapter, a new margin head, the optimizer; prepared by Accelerate."""
    from ..tuner.fingerprint import tensor_fingerprint

    base = load_base_model(config)
    data.record["base_model"] = tensor_fingerprint(base.state_dict().items())
    if data.loaded is not None:
        compare_run_records(data.loaded.run_record, data.record, data.loaded.path)
    dim = embedding_size(base, data.info.image_size)
    if config.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(base).__name__} does not support gradient checkpointing.")
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = build_backbone(base, config_with_gate(config, data.gate), data.info)
    trainable_parameters, total_parameters = backbone_parameter_counts(peft_model)
    head, loss_fn, _ = build_objective(  # the head (if the objective has one), the teacher targets, the loss
        config,
        peft_model.to(accelerator.device),
        data.train_dataset,
        dim,
        data.record["base_model"],
        data.record["train_data"],
        device=accelerator.device,
        write_cache=accelerator.is_main_process,
        progress=accelerator.is_main_process and config.progress_bar,
    )
    model = FaceEmbeddingClassifier(peft_model, head)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )
    prepared_model, prepared_optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)
    return _RunModel(
        prepared_model,
        prepared_optimizer,
        train_loader,
        model,
        optimizer,
        trainable,
        trainable_parameters,
        total_parameters,
        loss_fn,
    )


def _save_run(
    config: FaceAdapterTrainingConfig,
    accelerator: Any,
    data: _RunData,
    parts: _RunModel,
    schedule: Schedule,
    progress: TrainingProgress,
    metrics_after: dict[str, Any],
    quality_source: str,
) -> str | None:
    """Step 6 (main process): the adapter folder, written atomically; pushed to the Hub when asked. Returns the
    Hub URL, if pushed."""
    unwrapped = accelerator.unwrap_model(parts.model)
    metrics = {
        "before": progress.metrics_before,
        "after": metrics_after,
        "train": {"global_step": progress.global_step, "final_loss": progress.last_loss},
    }
    if data.gate:
        metrics["gate_calibration"] = data.gate
    if config.finetune_method == "quality_gated":
        card = adapter_model_card(
            config,
            unwrapped.backbone,
            base_name=data.info.name,
            base_is_hub_id=data.info.is_hub_id,
            quality_source=quality_source,
            epochs=round(progress.global_step / schedule.steps_per_epoch, 2),
            optimizer_steps=progress.global_step,
            num_processes=accelerator.num_processes,
            metrics_before=progress.metrics_before,
            metrics_after=metrics_after,
            eval_dataset_name=getattr(data.evaluation_hook, "dataset_name", None) if metrics_after else None,
            train_dataset_name=data.train_description,
            gate_calibration=describe_gate(data.gate) if data.gate else None,
        )
    else:
        card = baseline_model_card(
            config, data.info.name, progress.global_step, parts.trainable_parameters, parts.total_parameters
        )
    adapter_dir = Path(config.output_dir) / ADAPTER_DIRNAME
    with atomic_directory(adapter_dir) as tmp:
        unwrapped.backbone.save_pretrained(str(tmp))
        if unwrapped.head is not None:  # the distill objective trains no head
            unwrapped.head.save_pretrained(tmp)
        (tmp / "training_config.json").write_text(config.to_json())
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
    if config.push_to_hub:
        return push_adapter_folder(adapter_dir, config.hub_model_id, private=config.hub_private_repo)
    return None
