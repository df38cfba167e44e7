"""What every quality-gated layer shares, whatever the layer type: the second (low-quality) branch, the per-image
scale of the fused 2r hidden units, and merging at a fixed quality.

A gated layer holds two rank-r LoRA branches, high quality (PEFT's ``lora_A`` / ``lora_B``) and low quality
(``lora_A_lq`` / ``lora_B_lq``), mixed per image by q in [0, 1]. Because q is a per-image scalar, both branches run
as ONE rank-2r LoRA whose hidden units are scaled per image by ``s * q`` (HQ units) and ``s * (1 - q)`` (LQ units).
The adapted weight at a fixed q, ``W + s (q dW_hq + (1 - q) dW_lq)``, is linear in q, so merging is exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

from .quality_state import QualityState

__all__ = ["QualityGatedLayer"]


class QualityGatedLayer:
    """Mixin for the gated layer types (:class:`~petal_peft.QualityGatedLinear`,
    :class:`~petal_peft.QualityGatedConv2d`); ``isinstance(module, QualityGatedLayer)`` finds them all.

    A subclass provides ``_new_low_quality_factors`` (the LQ branch's two modules), ``_stacked_factors`` (the fused
    down and up weights), ``_project_down`` and ``_apply_unit_scales`` (the fused forward's down-projection and
    per-row scaling) and ``_delta_from_factors`` (the weight change at given per-unit scales), and may set
    ``_unit_blocks`` (how many groups interleave HQ and LQ units in the fused hidden layer; 1 for a linear layer).
    Every gated layer takes the model's shared ``quality_state`` (a fresh one when none is given).
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

    def _add_low_quality_branch(self, adapter_name: str, config: Any) -> None:
        """Called by the subclass's update_layer after LoRA's own (which built the HQ branch)."""
        down, up = self._new_low_quality_factors(adapter_name)
        self.lora_A_lq[adapter_name] = down
        self.lora_B_lq[adapter_name] = up
        self.dropout_position[adapter_name] = getattr(config, "dropout_position", "hidden")
        self._init_low_quality_branch(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _new_low_quality_factors(self, adapter_name: str) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def _init_low_quality_branch(self, adapter_name: str, init_lora_weights: Any) -> None:
        if init_lora_weights is False:
            return
        lora_a = self.lora_A_lq[adapter_name].weight
        if init_lora_weights == "gaussian":
            nn.init.normal_(lora_a, std=1 / self.r[adapter_name])
        else:
            nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B_lq[adapter_name].weight)

    @staticmethod
    def _refuse_adapter_names(kwargs: dict[str, Any]) -> None:
        if kwargs.pop("adapter_names", None) is not None:
            raise ValueError(
                "Quality-gated LoRA does not support PEFT's per-sample `adapter_names`; the per-image control is "
                "`quality=`."
            )

    def _start_forward(self, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
        """The base layer's output on ``x``, and the adapters to add to it (none when they are disabled, merged
        or absent; disabling them also unmerges them, as PEFT's LoRA layers do)."""
        self._refuse_adapter_names(kwargs)  # removes PEFT's adapter_names=None before the base layer sees kwargs
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters or self.merged:
            return [], result
        return [name for name in self.active_adapters if name in self.lora_A], result

    # ------------------------------------------------------------------------------------------ unit scales
    _unit_blocks: int = 1

    def _unit_scales(self, adapter: str, row_quality: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-row scale [rows, 2r] of the fused hidden units: ``s q`` on HQ units, ``s (1 - q)`` on LQ units.

        The fused layer holds ``_unit_blocks`` blocks of ``[HQ units, LQ units]`` (a grouped conv keeps each
        group's units together), so the pattern is repeated per block.
        """
        per_branch = self.r[adapter] // self._unit_blocks
        q = row_quality.to(dtype).unsqueeze(1)
        block = torch.cat([q.expand(-1, per_branch), (1 - q).expand(-1, per_branch)], dim=1)
        if self._unit_blocks > 1:
            block = block.repeat(1, self._unit_blocks)
        return block * self.scaling[adapter]

    def _fixed_unit_scales(self, adapter: str, quality: float, dtype: torch.dtype, device: Any) -> torch.Tensor:
        """The unit scales [2r] at one fixed quality (what merging uses)."""
        return self._unit_scales(adapter, torch.tensor([quality], dtype=dtype, device=device), dtype)[0]

    # ------------------------------------------------------------------------------------------ forward
    def _project_down(self, inputs: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _apply_unit_scales(self, hidden: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _scaled_hidden(
        self, adapter: str, x: torch.Tensor, row_quality: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One adapter's fused 2r hidden units on ``x``, scaled per row by ``s q`` / ``s (1 - q)`` (with the
        adapter's dropout on the input or on the hidden units), and the fused up weight that maps them to outputs.

        A subclass provides ``_project_down`` (its operation with the stacked down weight) and
        ``_apply_unit_scales`` (how the [rows, 2r] scales broadcast over its hidden layout).
        """
        down, up = self._stacked_factors(adapter)
        inputs = self._cast_input_dtype(x, down.dtype)
        dropout = self.lora_dropout[adapter]
        position = self.dropout_position.get(adapter, "hidden")
        if position == "input":
            inputs = dropout(inputs)
        hidden = self._project_down(inputs, down)
        hidden = self._apply_unit_scales(hidden, self._unit_scales(adapter, row_quality, hidden.dtype))
        if position == "hidden":
            hidden = dropout(hidden)
        return hidden, up

    # ------------------------------------------------------------------------------------------ merging
    def _stacked_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _delta_from_factors(self, down: torch.Tensor, up: torch.Tensor, unit_scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_delta_weight(self, adapter: str, quality: float | None = None) -> torch.Tensor:
        """The weight change at a fixed quality: ``s (q dW_hq + (1 - q) dW_lq)`` (exact: linear in q)."""
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
        unit_scale = self._fixed_unit_scales(adapter, float(quality), compute, device)
        return self._delta_from_factors(down.to(compute), up.to(compute), unit_scale).to(dtype)

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
