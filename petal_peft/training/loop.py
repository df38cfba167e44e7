"""The training loop: the learning-rate schedule, the loss of one batch, and the steps over the epochs.

:func:`training_loss` is the objective, kept apart from the bookkeeping around it (gradient accumulation,
clipping, logging, evaluation and checkpoints) so that another objective replaces just that step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpointing import CheckpointManager, TrainingProgress, TrainingState
from .config import FaceAdapterTrainingConfig

__all__ = ["Schedule", "TrainingLoop", "build_schedule", "numeric_metrics", "run_training_loop", "training_loss"]

#: ``loss_fn(model, batch, quality_source) -> scalar loss`` (see :func:`training_loss`)
LossFn = Callable[[torch.nn.Module, dict[str, Any], str], torch.Tensor]


@dataclass
class Schedule:
    """How long the run is and how the learning rate moves."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    warmup_steps: int
    scheduler: Any


def build_schedule(
    config: FaceAdapterTrainingConfig, batches_per_epoch: int, optimizer: torch.optim.Optimizer
) -> Schedule:
    """Optimizer steps from ``max_steps`` or the epochs, linear warmup then linear decay.

    Args:
        config: the run's settings.
        batches_per_epoch: batches one process sees per epoch (the prepared loader's length).
        optimizer: the optimizer as created (not Accelerate's wrapper: the scheduler is stepped once per optimizer
            step, not once per process).

    Returns:
        The schedule.
    """
    from transformers import get_linear_schedule_with_warmup

    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    if config.max_steps > 0:
        total_steps = config.max_steps
    else:
        total_steps = max(1, math.ceil(config.num_train_epochs * steps_per_epoch))
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = config.warmup_steps or round(config.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return Schedule(batches_per_epoch, steps_per_epoch, total_steps, num_epochs, warmup, scheduler)


def training_loss(model: torch.nn.Module, batch: dict[str, Any], quality_source: str) -> torch.Tensor:
    """The objective of one batch: the margin head's cross-entropy on the backbone's embeddings.

    Args:
        model: the (prepared) ``FaceEmbeddingClassifier``.
        batch: ``pixel_values``, ``labels`` and, from degraded data, ``quality_level``.
        quality_source: ``"degradation"`` gives the adapter the known quality of each image; otherwise the
            adapter's estimator scores the images.

    Returns:
        The scalar loss.
    """
    quality = batch.get("quality_level") if quality_source == "degradation" else None
    logits = model(pixel_values=batch["pixel_values"], labels=batch["labels"], quality=quality)
    return F.cross_entropy(logits.float(), batch["labels"])


def numeric_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics``, keyed ``prefix/name`` (what trackers accept)."""
    return {
        f"{prefix}/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


@dataclass
class TrainingLoop:
    """Everything the loop reads and advances."""

    config: FaceAdapterTrainingConfig
    accelerator: Any
    model: torch.nn.Module
    optimizer: Any
    train_loader: Any
    sampler: Any
    train_dataset: Any
    trainable: list[torch.nn.Parameter]
    schedule: Schedule
    progress: TrainingProgress
    checkpoints: CheckpointManager
    state: TrainingState
    evaluate: Callable[[], dict[str, Any]]
    quality_source: str
    loss_fn: LossFn = training_loss


def run_training_loop(run: TrainingLoop) -> None:
    """Train until ``schedule.total_steps`` optimizer steps: accumulate, clip, step, log, evaluate, checkpoint.

    Resumes where ``run.progress`` says (epoch, batches already seen in it, loss window), so a resumed run takes
    the same steps as an uninterrupted one.
    """
    config, accelerator, progress, schedule = run.config, run.accelerator, run.progress, run.schedule
    scheduler, total_steps = schedule.scheduler, schedule.total_steps
    bar = tqdm(
        total=total_steps,
        initial=progress.global_step,
        desc="training",
        disable=not (accelerator.is_main_process and config.progress_bar),
        dynamic_ncols=True,
    )
    loss_window = torch.zeros((), device=accelerator.device)
    loss_window += progress.loss_sum
    done = progress.global_step >= total_steps
    while not done and progress.epoch < schedule.num_epochs:
        # Accelerate's loader re-applies its own epoch counter to the sampler on every iteration: set it too.
        if hasattr(run.train_loader, "set_epoch"):
            run.train_loader.set_epoch(progress.epoch)
        run.sampler.set_epoch(progress.epoch)
        run.train_dataset.set_epoch(progress.epoch)
        loader = run.train_loader
        if progress.batches_in_epoch:
            loader = accelerator.skip_first_batches(run.train_loader, progress.batches_in_epoch)
        for batch in loader:
            with accelerator.accumulate(run.model):
                loss = run.loss_fn(run.model, batch, run.quality_source)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(run.trainable, config.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
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
                metrics = run.evaluate()
                if metrics:
                    accelerator.log(numeric_metrics("eval", metrics), step=step)
            if config.checkpointing_steps and step % config.checkpointing_steps == 0:
                progress.loss_sum = float(loss_window.item())
                run.checkpoints.save(step, run.state, {"epoch": progress.epoch})
            if step >= total_steps:
                done = True
                break
        if not done or progress.batches_in_epoch >= schedule.batches_per_epoch:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()
