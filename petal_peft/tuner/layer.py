"""The quality-gated dual-LoRA linear layer: the method's math."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

from .quality_state import QualityState


class QualityGatedLinear(LoraLinear):
    """A frozen linear layer with a high-quality and a low-quality LoRA branch, mixed per image by quality q.

    ``y = W x + b + s * B_hq A_hq (q x) + s * B_lq A_lq ((1 - q) x)``. The HQ branch is PEFT's ``lora_A`` /
    ``lora_B``, the LQ branch ``lora_A_lq`` / ``lora_B_lq``. Because q is a per-image scalar, the two branches are one
    rank-2r LoRA whose hidden units are scaled by ``[s q] * r + [s (1 - q)] * r``: one down- and one up-projection,
    and the up-projection accumulates straight into the base output (no extra pass over the output).
    """

    adapter_layer_names = LoraLayer.adapter_layer_names + ("lora_A_lq", "lora_B_lq")
    other_param_names = LoraLayer.other_param_names + ("dropout_position",)

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

    def _ensure_low_quality_containers(self) -> None:
        # LoRA's __init__ resets nn.Module state and then calls update_layer, so the containers are made here.
        if "lora_A_lq" not in self._modules:
            self.lora_A_lq = nn.ModuleDict()
            self.lora_B_lq = nn.ModuleDict()
            self.dropout_position: dict[str, str] = {}
            self._merged_quality: dict[str, float] = {}
            self.default_merge_quality: float | None = None

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: Any, **kwargs: Any) -> None:
        if self.resolve_lora_variant(config=config) is not None:
            raise ValueError("QualityGatedLinear does not support LoRA variants (DoRA, aLoRA, Arrow, ...).")
        self._ensure_low_quality_containers()
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        self.lora_A_lq[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        self.lora_B_lq[adapter_name] = nn.Linear(r, self.out_features, bias=False)
        self.dropout_position[adapter_name] = getattr(config, "dropout_position", "hidden")
        self._init_low_quality_branch(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _init_low_quality_branch(self, adapter_name: str, init_lora_weights: Any) -> None:
        if init_lora_weights is False:
            return
        lora_a = self.lora_A_lq[adapter_name].weight
        if init_lora_weights == "gaussian":
            nn.init.normal_(lora_a, std=1 / self.r[adapter_name])
        else:
            nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B_lq[adapter_name].weight)

    # ----------------------------------------------------------------------------------------------- forward
    def _stacked_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A [2r, in] and B [out, 2r] of the two branches side by side (HQ first)."""
        down = torch.cat([self.lora_A[adapter].weight, self.lora_A_lq[adapter].weight], dim=0)
        up = torch.cat([self.lora_B[adapter].weight, self.lora_B_lq[adapter].weight], dim=1)
        return down, up

    def _unit_scales(self, adapter: str, row_quality: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-row scale of the 2r hidden units: s * q for the HQ half, s * (1 - q) for the LQ half."""
        rank, scale = self.r[adapter], self.scaling[adapter]
        q = row_quality.to(dtype).unsqueeze(1)
        return torch.cat([q.expand(-1, rank), (1 - q).expand(-1, rank)], dim=1) * scale

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("adapter_names") is not None:
            raise ValueError(
                "Quality-gated LoRA does not support PEFT's per-sample `adapter_names`; the per-image control is "
                "`quality=`."
            )
        kwargs.pop("adapter_names", None)
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
    def get_delta_weight(self, adapter: str, quality: float | None = None) -> torch.Tensor:
        """The weight change at a fixed quality: s * (q B_hq A_hq + (1 - q) B_lq A_lq) (exact: linear in q)."""
        if quality is None:
            if adapter not in self._merged_quality:
                raise ValueError(
                    "A quality-gated adapter can only be merged at a fixed quality: use "
                    "merge_adapter(quality=...) or merge_and_unload(quality=...)."
                )
            quality = self._merged_quality[adapter]
        weight_b = self.lora_B[adapter].weight
        dtype, device = weight_b.dtype, weight_b.device
        compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        down, up = self._stacked_factors(adapter)
        rank, scale = self.r[adapter], self.scaling[adapter]
        unit_scale = torch.tensor([quality] * rank + [1.0 - quality] * rank, dtype=compute, device=device) * scale
        delta = (up.to(compute) * unit_scale) @ down.to(compute)
        if self.fan_in_fan_out:
            delta = delta.T
        return delta.to(dtype)

    def merge(
        self, safe_merge: bool = False, adapter_names: list[str] | None = None, quality: float | None = None
    ) -> None:
        """Add the delta weight at ``quality`` into the base weight (for the given or all active adapters)."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if quality is None:
            quality = self.default_merge_quality
        if quality is None:
            raise ValueError("Merging a quality-gated adapter needs a fixed quality in [0, 1]: pass quality=...")
        if not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"Merge quality must lie in [0, 1], got {quality}.")
        base_weight = self.get_base_layer().weight
        for adapter in adapter_names:
            if adapter not in self.lora_A:
                continue
            delta = self.get_delta_weight(adapter, float(quality))
            if safe_merge:
                merged = base_weight.data + delta.to(base_weight.dtype)
                if not torch.isfinite(merged).all():
                    raise ValueError(f"NaNs detected in the merged weights of adapter {adapter!r}.")
                base_weight.data = merged
            else:
                base_weight.data += delta.to(base_weight.dtype)
            self._merged_quality[adapter] = float(quality)
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        """Subtract every merged adapter at the quality it was merged at."""
        base_weight = self.get_base_layer().weight
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if adapter in self.lora_A:
                base_weight.data -= self.get_delta_weight(adapter).to(base_weight.dtype)
            self._merged_quality.pop(adapter, None)

    def __repr__(self) -> str:
        return "quality_gated_lora." + super().__repr__()
