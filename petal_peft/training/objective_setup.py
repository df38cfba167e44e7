"""Wiring an objective into a training run: the data view, the head, the teacher targets and the loss."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import FaceDataset
from .config import FaceAdapterTrainingConfig
from .objectives import ObjectiveLoss, needs_labels, uses_distillation
from .teacher_cache import IndexedFaces, _root, imprint_head, load_or_compute_teacher_targets, targets_fingerprint

__all__ = ["TEACHER_CACHE_NAME", "build_objective", "objective_dataset"]

TEACHER_CACHE_NAME = "teacher_targets.safetensors"


def objective_dataset(config: FaceAdapterTrainingConfig, dataset: FaceDataset) -> FaceDataset:
    """``dataset`` as the objective reads it: distillation needs each item's index and flip."""
    return IndexedFaces(dataset) if uses_distillation(config.objective) else dataset


def teacher_cache_path(config: FaceAdapterTrainingConfig) -> Path:
    return Path(config.teacher_cache) if config.teacher_cache else Path(config.output_dir) / TEACHER_CACHE_NAME


def build_objective(
    config: FaceAdapterTrainingConfig,
    backbone: nn.Module,
    dataset: FaceDataset,
    embedding_size: int,
    base_fingerprint: str,
    data_fingerprint: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    write_cache: bool = True,
    progress: bool = False,
) -> tuple[nn.Module | None, ObjectiveLoss, dict[str, Any]]:
    """``(head or None, loss, info)`` for ``config.objective``, before the first training step.

    The teacher targets (distillation, imprinted head) are read from the cache file or computed with the
    adapter switched off; ``info`` says which (``teacher_targets``: "cached", "computed" or "none").
    """
    from ..heads import build_head

    targets = None
    info: dict[str, Any] = {"objective": config.objective, "teacher_targets": "none"}
    if uses_distillation(config.objective) or (needs_labels(config.objective) and config.head_init == "imprint"):
        transform = _root(dataset, 0)[0].transform
        fingerprint = targets_fingerprint(base_fingerprint, data_fingerprint, transform)
        path = teacher_cache_path(config)
        targets, computed = load_or_compute_teacher_targets(
            backbone,
            dataset,
            path,
            fingerprint,
            batch_size=config.eval_batch_size,
            progress=progress,
            write=write_cache,
        )
        info.update(teacher_targets="computed" if computed else "cached", teacher_cache=os.fspath(path))
    head = None
    if needs_labels(config.objective):
        head_kwargs: dict[str, Any] = {"s": config.head_scale}
        if config.head_margin is not None:
            head_kwargs["m"] = config.head_margin
        head = build_head(config.head, embedding_size=embedding_size, num_classes=dataset.num_classes, **head_kwargs)
        if config.head_init == "imprint":
            assert targets is not None
            imprint_head(head, targets, list(dataset.labels))
    loss = ObjectiveLoss(
        config.objective, config.distill_weight, targets if uses_distillation(config.objective) else None
    )
    return head, loss.to(device), info
