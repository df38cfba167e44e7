"""The quality-gated dual-LoRA linear layer: the method's math on ``nn.Linear``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from .gated_layer import QualityGatedLayer


class QualityGatedLinear(QualityGatedLayer, LoraLinear):
    """A frozen linear layer with a high-quality and a low-quality LoRA branch, mixed per image by quality q.

    ``y = W x + b + s * B_hq A_hq (q x) + s * B_lq A_lq ((1 - q) x)``. The HQ branch is PEFT's ``lora_A`` /
    ``lora_B``, the LQ branch ``lora_A_lq`` / ``lora_B_lq``. Because q is a per-image scalar, the two branches are one
    rank-2r LoRA whose hidden units are scaled by ``[s q] * r + [s (1 - q)] * r``: one down- and one up-projection,
    and the up-projection accumulates straight into the base output (no extra pass over the output).
    """

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: Any, **kwargs: Any) -> None:
        if self.resolve_lora_variant(config=config) is not None:
            raise ValueError("QualityGatedLinear does not support LoRA variants (DoRA, aLoRA, Arrow, ...).")
        self._ensure_low_quality_containers()
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        self._add_low_quality_branch(adapter_name, config)

    def _new_low_quality_factors(self, adapter_name: str) -> tuple[nn.Module, nn.Module]:
        r = self.r[adapter_name]
        return nn.Linear(self.in_features, r, bias=False), nn.Linear(r, self.out_features, bias=False)

    # ----------------------------------------------------------------------------------------------- forward
    def _stacked_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A [2r, in] and B [out, 2r] of the two branches side by side (HQ first)."""
        down = torch.cat([self.lora_A[adapter].weight, self.lora_A_lq[adapter].weight], dim=0)
        up = torch.cat([self.lora_B[adapter].weight, self.lora_B_lq[adapter].weight], dim=1)
        return down, up

    def _project_down(self, inputs: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, down)

    def _apply_unit_scales(self, hidden: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """Scales [rows, 2r] over hidden [..., 2r] whose leading dimensions hold ``rows`` images."""
        return hidden.reshape(scales.shape[0], -1, hidden.shape[-1]) * scales.unsqueeze(1)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active, result = self._start_forward(x, args, kwargs)
        if not active:
            return result
        result_dtype = result.dtype
        rows = x.shape[0] if x.dim() > 1 else 1
        row_quality = self.quality_state.rows(rows)
        out_2d = result.reshape(-1, result.shape[-1])
        for adapter in active:
            hidden, up = self._scaled_hidden(adapter, x, row_quality)
            hidden_2d = hidden.reshape(-1, hidden.shape[-1])
            # One GEMM that also adds the base output: y = y_base + h B^T.
            out_2d = torch.addmm(out_2d.to(hidden_2d.dtype), hidden_2d, up.t())
        return out_2d.reshape(result.shape).to(result_dtype)

    # ----------------------------------------------------------------------------------------------- merging
    def _delta_from_factors(self, down: torch.Tensor, up: torch.Tensor, unit_scale: torch.Tensor) -> torch.Tensor:
        delta = (up * unit_scale) @ down
        return delta.T if self.fan_in_fan_out else delta

    def __repr__(self) -> str:
        return "quality_gated_lora." + super().__repr__()
