"""What the base-building recipes share: the learning-rate schedule and a deterministic torch context."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["cosine_lr", "deterministic"]


def cosine_lr(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr_ratio * lr`` at ``total_steps``.

    Args:
        step: the 0-based optimisation step.
        lr: the peak learning rate.
        warmup_steps: steps of linear warmup (0 for none).
        total_steps: the step at which the decay reaches its floor.
        min_lr_ratio: the floor as a fraction of ``lr``.

    Returns:
        The learning rate of ``step``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@contextmanager
def deterministic(num_threads: int) -> Iterator[None]:
    """Run the body with ``num_threads`` torch threads and deterministic algorithms; restore both afterwards."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)
