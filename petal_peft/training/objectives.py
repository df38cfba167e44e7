"""Training objectives: what the adapter is trained to do, as one choice of the recipe.

- ``"margin"``: the PETALface recipe. A margin head (CosFace, ArcFace, ...) over the training identities; needs
  identity labels. The head starts random, or from class prototypes (``head_init="imprint"``).
- ``"distill"``: cross-resolution self-distillation, no labels. The target of every training image is the
  frozen base's embedding of its sharp version (and the same flip); the adapted model's embedding of the
  degraded copy (at its low quality) and of the sharp image (at its high quality) are both pulled to it by
  ``1 - cos``. The low-quality branch learns to map a blurred face where the base maps the sharp one, while the
  sharp term keeps the high-quality path where the base was (no forgetting). The targets are computed once
  (:mod:`petal_peft.training.teacher_cache`), so a step costs what a margin step costs.
- ``"margin+distill"``: both, ``margin + distill_weight * distill``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "OBJECTIVES",
    "ObjectiveLoss",
    "distillation_loss",
    "needs_labels",
    "uses_distillation",
]

OBJECTIVES = ("margin", "distill", "margin+distill")


def needs_labels(objective: str) -> bool:
    """Whether ``objective`` trains a margin head over identities (and so needs identity labels)."""
    return objective in ("margin", "margin+distill")


def uses_distillation(objective: str) -> bool:
    """Whether ``objective`` pulls embeddings to the frozen base's sharp-image targets."""
    return objective in ("distill", "margin+distill")


def distillation_loss(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(embedding, target)`` over the batch, in fp32.

    Args:
        embeddings: the adapted model's embeddings ``[B, D]``.
        targets: the frozen base's sharp-image embeddings ``[B, D]``.

    Returns:
        A scalar tensor in [0, 2].
    """
    if embeddings.shape != targets.shape:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} and targets {tuple(targets.shape)} differ in shape.")
    return (1.0 - F.cosine_similarity(embeddings.float(), targets.float(), dim=-1)).mean()


class ObjectiveLoss:
    """The loss of one batch under ``objective``: one forward of the model, whatever the objective.

    ``targets`` (``[N, 2, D]``: dataset index, flip) are the cached sharp-image embeddings; the batch carries
    ``index`` and ``flipped`` for distillation (see :class:`petal_peft.training.teacher_cache.IndexedFaces`).
    """

    def __init__(self, objective: str, distill_weight: float = 1.0, targets: torch.Tensor | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
        if uses_distillation(objective) and targets is None:
            raise ValueError(f"objective {objective!r} needs the teacher targets.")
        self.objective = objective
        self.distill_weight = float(distill_weight)
        self.targets = targets

    def to(self, device: torch.device | str) -> ObjectiveLoss:
        if self.targets is not None:
            self.targets = self.targets.to(device)
        return self

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], quality_source: str) -> torch.Tensor:
        """The scalar loss of ``batch``; ``quality_source`` ``"degradation"`` gives the adapter each image's
        known quality level, otherwise its estimator scores the pixels (see the training loop)."""
        quality = batch.get("quality_level") if quality_source == "degradation" else None
        margin = needs_labels(self.objective)
        embeddings, logits = model(
            pixel_values=batch["pixel_values"],
            labels=batch["labels"] if margin else None,
            quality=quality,
            with_embeddings=True,
        )
        loss = embeddings.new_zeros((), dtype=torch.float32)
        if margin:
            loss = loss + F.cross_entropy(logits.float(), batch["labels"])
        if uses_distillation(self.objective):
            assert self.targets is not None
            targets = self.targets[batch["index"].long(), batch["flipped"].long()]
            loss = loss + self.distill_weight * distillation_loss(embeddings, targets)
        return loss
