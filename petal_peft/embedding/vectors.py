"""Embedding vectors: unit L2 normalisation and flip-test fusion (the project's embedding protocol)."""

from __future__ import annotations

import torch

__all__ = ["fuse_flip", "l2_normalize"]


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit L2 norm (a zero row stays zero instead of becoming NaN)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def fuse_flip(features: torch.Tensor, flipped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip-test fusion: ``normalize(n1 * u1 + n2 * u2)`` with u the unit features and n their norms.

    That is the normalised sum of the raw features, so a confident (large-norm) view weighs more. Returns the
    unit fused embedding and the norm of the fused sum (IJB keeps it when averaging within media).
    """
    if features.shape != flipped.shape:
        raise ValueError(f"flip fusion needs equal shapes, got {tuple(features.shape)} and {tuple(flipped.shape)}.")
    fused = features + flipped
    return l2_normalize(fused), fused.norm(dim=-1)
