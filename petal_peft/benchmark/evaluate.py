"""Evaluating one model on one split: LR identification (CMC, mAP) and sharp 1:1 verification.

Metrics follow the project's evaluation package: flip-fused, L2-normalised embeddings for the trained and
untouched models (reference models embed as their authors do), inner-product closed-set identification with
distractors in the gallery (``closed_set_identification``: rank-k, CMC, mAP over mated probes), and 10-fold
verification accuracy on squared L2 distances (``kfold_verification_accuracy``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .data import EvalSplit

__all__ = ["ImageEmbedder", "evaluate_split", "model_embedder", "reference_embedder"]

#: (uint8 images [N, 3, S, S], role) -> (L2-normalised embeddings [N, D], per-image quality q or None)
ImageEmbedder = Callable[[torch.Tensor, str], tuple[torch.Tensor, "torch.Tensor | None"]]

RANKS = (1, 5, 10, 20)


def normalise(images: torch.Tensor, ps: dict[str, Any]) -> torch.Tensor:
    mean = torch.tensor(ps["image_mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(ps["image_std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def model_embedder(
    model: torch.nn.Module, mode: str, ps: dict[str, Any], batch_size: int = 256, flip: bool = True
) -> ImageEmbedder:
    """A model evaluated ``plain``, with the adapter's ``gate`` per image, or as merged ``proxy`` encoders (or any
    other mode of :func:`petal_peft.embedding.builder.build_embedder`)."""
    from ..embedding.builder import build_embedder

    embedder = build_embedder(mode, model, batch_size=batch_size, progress=False, flip=flip)

    def embed(images: torch.Tensor, role: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = embedder.embed(normalise(images, ps), role=role)
        return out.embeddings, out.quality

    return embed


def reference_embedder(reference: Any) -> ImageEmbedder:
    """A reference model (``embed(uint8 images) -> [N, D]``), its embeddings L2-normalised."""

    def embed(images: torch.Tensor, role: str) -> tuple[torch.Tensor, None]:
        emb = reference.embed(images, desc=f"{getattr(reference, 'name', 'reference')} {role} images")
        return torch.nn.functional.normalize(emb.float(), dim=-1), None

    return embed


@torch.no_grad()
def evaluate_split(embed: ImageEmbedder, split: EvalSplit) -> dict[str, Any]:
    """LR identification (degraded probes vs sharp gallery + distractors) and sharp 10-fold verification.

    Every sharp image is embedded once in the gallery role: in every mode the gallery and the pair role use
    the same encoder (proxy encoders verify with the gallery encoder).
    """
    from ..evaluation import closed_set_identification, kfold_verification_accuracy
    from ..evaluation.metrics import roc_auc, roc_curve, squared_l2

    probes, probe_q = embed(split.probes, "probe")
    sharp, sharp_q = embed(split.sharp, "gallery")
    ident = closed_set_identification(
        probes, split.probe_labels, sharp[split.gallery_index], split.gallery_labels, ranks=RANKS
    )
    distances = squared_l2(sharp[split.pair_a], sharp[split.pair_b])
    kfold = kfold_verification_accuracy(distances, split.same, n_folds=10).metrics()
    fpr, tpr, _ = roc_curve(split.same, -distances)
    metrics = ident.metrics()
    out: dict[str, Any] = {f"rank-{r}": metrics[f"rank-{r}"] for r in RANKS}
    out["mAP"] = metrics["mAP"]
    out["hr_verification"] = kfold["accuracy"]
    out["hr_verification_fold_std"] = kfold["accuracy_std"]
    out["hr_auc"] = 100.0 * roc_auc(fpr, tpr)
    out["cmc"] = (100.0 * ident.cmc[:50]).tolist()
    if probe_q is not None:
        out["probe_q_mean"] = float(probe_q.mean())
        out["gallery_q_mean"] = float(sharp_q[split.gallery_index].mean())
    out["num_probes"] = int(len(split.probe_labels))
    out["gallery_size"] = int(len(split.gallery_index))
    out["num_pairs"] = int(len(split.same))
    return out
