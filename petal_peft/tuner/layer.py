"""The quality-gated dual-LoRA linear layer: the method's math on ``nn.Linear``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from .gated_layer import QualityGatedLayer
from .quality_state import QualityState


class QualityGatedLinear(QualityGatedLayer, LoraLinear):
    """A frozen linear layer with a high-quality and a low-quality LoRA branch, mixed per image by quality q.

    ``y = W x + b + s * B_hq A_hq (q x) + s * B_lq A_lq ((1 - q) x)``. The HQ branch is PEFT's ``lora_A`` /
    ``lora_B``, the LQ branch ``lora_A_lq`` / ``lora_B_lq``. Because q is a per-image scalar, the two branches are one
    rank-2r LoRA whose hidden units are scaled by ``[s q] * r + [s (1 - q)] * r``: one down- and one up-projection,
    and the up-projection accumulates straight into the base output (no extra pass over the output).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: Any,
        r: int = 0,
        lora_alpha: int = 1,
        quality_state: QualityState | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_layer, adapter_name, config=config, r=r, lora_alpha=lora_alpha, **kwargs)
        # Plain attribute (not a submodule): one state object shared by every gated layer of the model.
        self.quality_state = quality_state if quality_state is not None else QualityState()

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

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._refuse_adapter_names(kwargs)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        active = [name for name in self.active_adapters if name in self.lora_A]
        if not active:
            return self.base_layer(x, *args, **kwargs)

        result = self.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        rows = x.shape[0] if x.dim() > 1 else 1
        row_quality = self.quality_state.rows(rows)
        out_2d = result.reshape(-1, result.shape[-1])
        for adapter in active:
            down, up = self._stacked_factors(adapter)
            inputs = self._cast_input_dtype(x, down.dtype)
            dropout = self.lora_dropout[adapter]
            if self.dropout_position.get(adapter, "hidden") == "input":
                inputs = dropout(inputs)
            hidden = F.linear(inputs, down)
            scales = self._unit_scales(adapter, row_quality, hidden.dtype)
            hidden = hidden.reshape(rows, -1, hidden.shape[-1]) * scales.unsqueeze(1)
            if self.dropout_position.get(adapter, "hidden") == "hidden":
                hidden = dropout(hidden)
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
