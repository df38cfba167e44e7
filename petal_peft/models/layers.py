"""Layers shared by the face backbones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenStatsBatchNorm1d"]


class FrozenStatsBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that, while its affine parameters are frozen, normalises with its running statistics
    and leaves them unchanged, even in training mode.

    Adapter training freezes the backbone but runs it in training mode. A plain BatchNorm would then normalise
    with batch statistics and overwrite its running statistics, and neither can be saved with the adapter: the
    reloaded adapter would run against the original statistics, not those it was trained with. Trainable
    (unfrozen) BatchNorm layers, e.g. in full fine-tuning, behave exactly like ``nn.BatchNorm1d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        frozen = self.weight is not None and not self.weight.requires_grad
        if self.training and frozen and self.running_mean is not None:
            return F.batch_norm(
                input, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        return super().forward(input)
