"""``train(config)``: adapt a pretrained face transformer with a quality-gated adapter, using Accelerate.

One CPU, one GPU or many (``accelerate launch`` / ``torchrun``), mixed precision, gradient accumulation,
gradient checkpointing, atomic resumable checkpoints, TensorBoard metrics, periodic evaluation, and a final
``adapter/`` folder (adapter + head + training_config.json + metrics.json + model card) written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..files import atomic_directory
from .checkpointing import CheckpointManager, LoadedCheckpoint, TrainingProgress, TrainingState
from .config import FaceAdapterTrainingConfig
from .data import build_train_dataloader, build_train_dataset
from .evaluation_hook import EvaluationHook, TinyFaceEvaluationHook, preserved_rng
from .model_card import push_adapter_folder, render_model_card
from .modeling import (
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
    from ..zoo.pretrained_base import base_cache_dir
    from .embedded import prepare_embedded_data

    data = prepare_embedded_data(base_cache_dir(), image_size=image_size, seed=0)
    eval_data = config.eval_data if config.eval_data is not None else data.eval_dir
    return data.train_dir, eval_data, data.description


def train(config: FaceAdapterTrainingConfig, evaluation_hook: EvaluationHook | None = None) -> TrainResult:
    """Train the adapter and head described by ``config``; see docs/training.md.

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
    check_output_dir_path(output_dir)
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


def _train(
    config: FaceAdapterTrainingConfig, accelerator: Any, evaluation_hook: EvaluationHook | None, start: float
) -> TrainResult:
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from ..tuner.fingerprint import tensor_fingerprint

    output_dir = Path(config.output_dir)
    main = accelerator.is_main_process
    set_seed(config.seed)
    quality_source = config.resolved_quality_source()

    # ---- 1. inputs, validated before anything heavy: output folder, checkpoint, data -------------------------
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
    record["train_data"] = data_fingerprint(train_dataset)
    if loaded is not None:
        compare_run_records(loaded.run_record, record, loaded.path)
    train_dataset = objective_dataset(config, train_dataset)
    train_loader, sampler = build_train_dataloader(config, train_dataset, accelerator.num_processes)
    if evaluation_hook is None and eval_source is not None:
        hook_class = TinyFaceEvaluationHook if config.finetune_method == "quality_gated" else _PlainTinyFaceHook
        evaluation_hook = hook_class(
            eval_source,
            info.image_size,
            info.image_mean,
            info.image_std,
            batch_size=config.eval_batch_size,
            progress=False,
        )

    # ---- 2. model: frozen base + adapter, new head -----------------------------------------------------------
    base = load_base_model(config)
    record["base_model"] = tensor_fingerprint(base.state_dict().items())
    if loaded is not None:
        compare_run_records(loaded.run_record, record, loaded.path)
    dim = embedding_size(base, info.image_size)
    if config.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(base).__name__} does not support gradient checkpointing.")
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = build_backbone(base, config, info)
    trainable_parameters, total_parameters = backbone_parameter_counts(peft_model)
    head, objective_loss, _ = build_objective(
        config,
        peft_model.to(accelerator.device),
        train_dataset,
        dim,
        record["base_model"],
        record["train_data"],
        device=accelerator.device,
        write_cache=main,
        progress=main and config.progress_bar,
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
    raw_optimizer = optimizer
    raw_model = model
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)

    # ---- 3. schedule ---------------------------------------------------------------------------------------------
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    if config.max_steps > 0:
        total_steps = config.max_steps
    else:
        total_steps = max(1, math.ceil(config.num_train_epochs * steps_per_epoch))
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = config.warmup_steps or round(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, total_steps)
    # Not prepared by Accelerate (which would step it once per process); stepped once per optimizer step.
    scheduler = get_linear_schedule_with_warmup(raw_optimizer, warmup, total_steps)

    # ---- 4. checkpoints and resume --------------------------------------------------------------------------
    progress = TrainingProgress()
    state = TrainingState(raw_model, raw_optimizer, scheduler, progress, getattr(accelerator, "scaler", None))
    resumed_from = None
    if loaded is not None:
        checkpoints.load(loaded, state)
        resumed_from = str(loaded.path)
        if progress.batches_in_epoch >= batches_per_epoch:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
        if main:
            print(f"Resumed from {loaded.path} at step {progress.global_step} of {total_steps}.")

    def unwrapped_backbone() -> torch.nn.Module:
        return accelerator.unwrap_model(model).backbone

    def evaluate() -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if evaluation_hook is not None and main:
            with preserved_rng():
                metrics = dict(evaluation_hook(unwrapped_backbone()))
        accelerator.wait_for_everyone()
        return metrics

    if config.report_to != "none":
        accelerator.init_trackers("petal-peft", config=_tracker_config(config))
    if progress.global_step == 0 and not progress.metrics_before and config.eval_before_training:
        progress.metrics_before = evaluate()
        if progress.metrics_before:
            accelerator.log(_numeric("eval", progress.metrics_before), step=0)

    # ---- 5. the loop ----------------------------------------------------------------------------------------
    bar = tqdm(
        total=total_steps,
        initial=progress.global_step,
        desc="training",
        disable=not (main and config.progress_bar),
        dynamic_ncols=True,
    )
    loss_window = torch.zeros((), device=accelerator.device)
    loss_window += progress.loss_sum
    done = progress.global_step >= total_steps
    while not done and progress.epoch < num_epochs:
        # Accelerate's loader re-applies its own epoch counter to the sampler on every iteration: set it too.
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(progress.epoch)
        sampler.set_epoch(progress.epoch)
        train_dataset.set_epoch(progress.epoch)
        loader = train_loader
        if progress.batches_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)
        for batch in loader:
            quality = batch.get("quality_level") if quality_source == "degradation" else None
            with accelerator.accumulate(model):
                loss = objective_loss(model, batch, quality)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batches_in_epoch += 1
            loss_window += loss.detach().float()
            progress.loss_count += 1
            if not accelerator.sync_gradients:
                continue
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            progress.global_step += 1
            progress.accelerator_step = accelerator.step
            bar.update(1)
            step = progress.global_step
            if step % config.logging_steps == 0 or step == total_steps:
                mean_loss = accelerator.gather(loss_window.reshape(1)).mean().item() / max(progress.loss_count, 1)
                progress.last_loss = mean_loss
                lr = scheduler.get_last_lr()[0]
                accelerator.log({"train/loss": mean_loss, "train/lr": lr, "train/epoch": progress.epoch}, step=step)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                loss_window.zero_()
                progress.loss_count = 0
            if config.eval_steps and step % config.eval_steps == 0 and step != total_steps:
                metrics = evaluate()
                if metrics:
                    accelerator.log(_numeric("eval", metrics), step=step)
            if config.checkpointing_steps and step % config.checkpointing_steps == 0:
                progress.loss_sum = float(loss_window.item())
                checkpoints.save(step, state, {"epoch": progress.epoch})
            if step >= total_steps:
                done = True
                break
        if not done or progress.batches_in_epoch >= batches_per_epoch:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()

    # ---- 6. final evaluation and atomic save -----------------------------------------------------------------
    metrics_after = evaluate()
    if metrics_after:
        accelerator.log(_numeric("eval", metrics_after), step=progress.global_step)
    adapter_dir = output_dir / ADAPTER_DIRNAME
    hub_url = None
    if main:
        unwrapped = accelerator.unwrap_model(model)
        metrics = {
            "before": progress.metrics_before,
            "after": metrics_after,
            "train": {"global_step": progress.global_step, "final_loss": progress.last_loss},
        }
        if config.finetune_method == "quality_gated":
            adapter_config = unwrapped.backbone.peft_config[unwrapped.backbone.active_adapter]
            card = render_model_card(
                model_name=config.hub_model_id or f"{Path(config.output_dir).name}-adapter",
                base_model=info.name,
                base_model_is_hub_id=info.is_hub_id,
                gate_settings=adapter_config.gate_settings(),
                adapter_settings={
                    "r": adapter_config.r,
                    "lora_alpha": adapter_config.lora_alpha,
                    "lora_dropout": adapter_config.lora_dropout,
                    "target_modules": sorted(adapter_config.target_modules or []),
                    "quality_source (training)": quality_source,
                },
                training_settings={
                    "objective": config.objective,
                    "head": config.head if unwrapped.head is not None else "none",
                    "epochs": round(progress.global_step / steps_per_epoch, 2),
                    "optimizer steps": progress.global_step,
                    "global batch": config.per_device_train_batch_size
                    * accelerator.num_processes
                    * config.gradient_accumulation_steps,
                    "learning_rate": config.learning_rate,
                    "weight_decay": config.weight_decay,
                    "degrade_fraction": config.degrade_fraction,
                    "mixed_precision": config.mixed_precision,
                    "seed": config.seed,
                },
                metrics_before=progress.metrics_before,
                metrics_after=metrics_after,
                eval_dataset_name=getattr(evaluation_hook, "dataset_name", None) if metrics_after else None,
                train_dataset_name=train_description,
            )
        else:
            card = _baseline_card(config, info.name, progress.global_step, trainable_parameters, total_parameters)
        with atomic_directory(adapter_dir) as tmp:
            unwrapped.backbone.save_pretrained(str(tmp))
            if unwrapped.head is not None:  # the distill objective trains no head
                unwrapped.head.save_pretrained(tmp)
            (tmp / "training_config.json").write_text(config.to_json())
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            (tmp / "README.md").write_text(card, encoding="utf-8")
        if config.push_to_hub:
            hub_url = push_adapter_folder(adapter_dir, config.hub_model_id, private=config.hub_private_repo)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        output_dir=str(output_dir),
        adapter_dir=str(adapter_dir) if main else None,
        global_step=progress.global_step,
        total_steps=total_steps,
        final_loss=progress.last_loss,
        metrics_before=progress.metrics_before,
        metrics_after=metrics_after,
        resumed_from=resumed_from,
        hub_url=hub_url,
        runtime_s=time.perf_counter() - start,
        train_description=train_description,
        finetune_method=config.finetune_method,
        trainable_parameters=trainable_parameters,
        total_parameters=total_parameters,
    )


def _baseline_card(config: FaceAdapterTrainingConfig, base_name: str, steps: int, trainable: int, total: int) -> str:
    """A short README for the ungated baselines (plain LoRA, full fine-tuning): what they are and how to load."""
    if config.finetune_method == "lora":
        what = (
            f"PEFT's plain LoRA (rank {2 * config.lora_r}, no quality gate) trained as a baseline for the "
            "quality-gated adapter: same target modules and trainable-parameter count."
        )
        load = "from peft import PeftModel\nmodel = PeftModel.from_pretrained(base_model, folder)"
    else:
        what = "The whole backbone fine-tuned (every weight trained): the full fine-tuning baseline."
        load = "from transformers import AutoModel\nmodel = AutoModel.from_pretrained(folder)"
    return (
        f"# {Path(config.output_dir).name} ({config.finetune_method} baseline)\n\n{what}\n\n"
        f"- base model: `{base_name}`\n- optimizer steps: {steps}\n"
        f"- trainable backbone parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)\n"
        f"- margin head (`head.safetensors`) saved alongside; it is not needed for embeddings.\n\n"
        f"```python\n{load}\n```\n"
    )


class _PlainTinyFaceHook(TinyFaceEvaluationHook):
    """The TinyFace hook for the ungated baselines: one encoder for probes and gallery alike."""

    def embedder(self, peft_model: torch.nn.Module) -> Any:
        from ..evaluation.extractor import plain_embedder

        return plain_embedder(peft_model, **self.extractor_kwargs)


def _numeric(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }
