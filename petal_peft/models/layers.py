"""Layers shared by the face backbones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenStatsBatchNorm1d", "FrozenStatsBatchNorm2d"]


class _FrozenStatsMixin:
    """Normalise with the running statistics, and leave them unchanged, while every affine parameter is frozen."""

    def _trained_parameters(self) -> list[torch.Tensor]:
        return [p for p in (self.weight, self.bias) if p is not None]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        affine = self._trained_parameters()
        frozen = bool(affine) and not any(p.requires_grad for p in affine)
        if self.training and frozen and self.running_mean is not None:
            self._check_input_dim(input)
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        return super().forward(input)


class FrozenStatsBatchNorm1d(_FrozenStatsMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that, while its affine parameters are frozen, normalises with its running statistics
    and leaves them unchanged, even in training mode.

    Adapter training freezes the backbone but runs it in training mode. A plain BatchNorm would then normalise
    with batch statistics and overwrite its running statistics, and neither can be saved with the adapter: the
    reloaded adapter would run against the original statistics, not those it was trained with. Trainable
    (unfrozen) BatchNorm layers, e.g. in full fine-tuning, behave exactly like ``nn.BatchNorm1d``.
    """


class FrozenStatsBatchNorm2d(_FrozenStatsMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the same rule as :class:`FrozenStatsBatchNorm1d` (for convolutional backbones)."""
