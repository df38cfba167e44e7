"""The quality-gated dual-LoRA convolution: the method's math on ``nn.Conv2d``.

``y = conv(x) + s Up_hq(Down_hq(q x)) + s Up_lq(Down_lq((1 - q) x))``, where Down is a convolution with the layer's
kernel, stride, padding (and padding mode), dilation and groups and r output channels, and Up a 1x1 convolution
with the layer's groups. Because the composite ``Up o Down`` is then itself a convolution of the layer's geometry
(per group, a rank-r/groups factorisation of the group's kernel), the adapter merges exactly into the base weight.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Conv2d as LoraConv2d
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .gated_layer import QualityGatedLayer

__all__ = ["QualityGatedConv2d", "check_conv_rank"]


def check_conv_rank(conv: nn.Conv2d, r: int, name: str | None = None) -> None:
    """Refuse a rank that the convolution's groups do not divide (each group needs whole units in both branches)."""
    if r % conv.groups:
        where = f"{name!r} is an nn.Conv2d" if name else "this nn.Conv2d has"
        raise ValueError(
            f"{where} with groups={conv.groups}, which does not divide the adapter rank r={r}: choose r as a "
            f"multiple of {conv.groups} (rank_pattern can set it for this layer) or leave it out of target_modules."
        )


def _add_up_projection(result: torch.Tensor, hidden: torch.Tensor, up: torch.Tensor, groups: int) -> torch.Tensor:
    """``result + conv1x1(hidden, up)``, for one group as one batched GEMM that also does the addition.

    A 1x1 convolution with few input channels is slow on CPU (about 4x a GEMM of the same size); the GEMM also
    reads the base output as its addend, so no separate pass over the output is made. The result keeps the
    base output's memory format.
    """
    if groups == 1:
        batch, channels = result.shape[:2]
        up_2d = up.flatten(1)
        if result.is_contiguous():
            hidden_3d = hidden.flatten(2)
            out = torch.baddbmm(result.flatten(2), up_2d.expand(batch, -1, -1), hidden_3d)
            return out.view(result.shape)
        if result.is_contiguous(memory_format=torch.channels_last):
            rows = result.permute(0, 2, 3, 1).reshape(-1, channels)
            hidden_rows = hidden.permute(0, 2, 3, 1).reshape(-1, hidden.shape[1])
            out = torch.addmm(rows, hidden_rows, up_2d.t())
            return out.view(batch, result.shape[2], result.shape[3], channels).permute(0, 3, 1, 2)
    return result + F.conv2d(hidden, up, groups=groups)


class QualityGatedConv2d(QualityGatedLayer, LoraConv2d):
    """A frozen ``nn.Conv2d`` with a high-quality and a low-quality LoRA branch, mixed per image by quality q.

    Run fused: one down-convolution with 2r output channels (both branches' kernels), a per-image scale of those
    2r channels (``[B, 2r, 1, 1]``: ``s q`` on the HQ channels, ``s (1 - q)`` on the LQ ones), one 1x1
    up-convolution added to the base output. With ``groups`` > 1 every group keeps its own ``r / groups`` HQ and
    LQ channels side by side, so the composite stays a grouped convolution and the merge stays exact (PEFT's conv
    LoRA, whose down-convolution ignores groups, cannot merge such layers).
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: Any, r: int = 0, **kwargs: Any) -> None:
        conv = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        check_conv_rank(conv, r, kwargs.get("target_name"))
        with warnings.catch_warnings():
            # PEFT warns that its conv LoRA cannot merge grouped convolutions; this layer can.
            warnings.filterwarnings("ignore", message=".*groups > 1. Merging is not supported.*")
            super().__init__(base_layer, adapter_name, config=config, r=r, **kwargs)

    @property
    def _unit_blocks(self) -> int:
        return self.get_base_layer().groups

    def _down_conv(self, out_channels: int) -> nn.Conv2d:
        """A bias-free convolution with the base layer's geometry and ``out_channels`` outputs."""
        base = self.get_base_layer()
        return nn.Conv2d(
            base.in_channels,
            out_channels,
            base.kernel_size,
            stride=base.stride,
            padding=base.padding,
            dilation=base.dilation,
            groups=base.groups,
            bias=False,
            padding_mode=base.padding_mode,
        )

    def _up_conv(self, in_channels: int) -> nn.Conv2d:
        return nn.Conv2d(in_channels, self.out_features, 1, groups=self.get_base_layer().groups, bias=False)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: Any, **kwargs: Any) -> None:
        if self.resolve_lora_variant(config=config) is not None:
            raise ValueError("QualityGatedConv2d does not support LoRA variants (DoRA, ...).")
        check_conv_rank(self.get_base_layer(), r, kwargs.get("target_name"))
        self._ensure_low_quality_containers()
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        # PEFT's conv LoRA builds its down-convolution without the layer's dilation, groups and padding mode:
        # rebuild it with the full geometry (its up-convolution already carries the groups), then initialise again.
        self.lora_A[adapter_name] = self._down_conv(r)
        self.lora_B[adapter_name] = self._up_conv(r)
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._add_low_quality_branch(adapter_name, config)

    def _new_low_quality_factors(self, adapter_name: str) -> tuple[nn.Module, nn.Module]:
        r = self.r[adapter_name]
        return self._down_conv(r), self._up_conv(r)

    # ----------------------------------------------------------------------------------------------- forward
    def _stacked_factors(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Down [2r, in/groups, kh, kw] and up [out, 2r/groups, 1, 1], each group's HQ units before its LQ units."""
        down_hq, down_lq = self.lora_A[adapter].weight, self.lora_A_lq[adapter].weight
        groups = self._unit_blocks
        if groups == 1:
            down = torch.cat([down_hq, down_lq], dim=0)
        else:
            down = torch.stack([down_hq.unflatten(0, (groups, -1)), down_lq.unflatten(0, (groups, -1))], dim=1)
            down = down.flatten(0, 2)
        up = torch.cat([self.lora_B[adapter].weight, self.lora_B_lq[adapter].weight], dim=1)
        return down, up

    def _project_down(self, inputs: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        # the base layer's own convolution (stride, padding and padding mode, dilation, groups) with 2r outputs
        return self.get_base_layer()._conv_forward(inputs, down, None)

    def _apply_unit_scales(self, hidden: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return hidden * scales[:, :, None, None]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active, result = self._start_forward(x, args, kwargs)
        if not active:
            return result
        result_dtype = result.dtype
        unbatched = x.dim() == 3
        if unbatched:
            x, result = x.unsqueeze(0), result.unsqueeze(0)
        row_quality = self.quality_state.rows(x.shape[0])
        base = self.get_base_layer()
        for adapter in active:
            hidden, up = self._scaled_hidden(adapter, x, row_quality)
            result = _add_up_projection(result.to(hidden.dtype), hidden, up, base.groups)
        if unbatched:
            result = result.squeeze(0)
        return result.to(result_dtype)

    # ----------------------------------------------------------------------------------------------- merging
    def _delta_from_factors(self, down: torch.Tensor, up: torch.Tensor, unit_scale: torch.Tensor) -> torch.Tensor:
        """Per group g: ``delta_g = (up_g * scales) @ down_g`` over the group's 2r/groups units."""
        groups, out_channels, units = self._unit_blocks, up.shape[0], up.shape[1]
        up_scaled = up.reshape(out_channels, units) * unit_scale[:units]  # the scale pattern repeats per group
        delta = torch.bmm(up_scaled.view(groups, out_channels // groups, units), down.reshape(groups, units, -1))
        return delta.reshape(out_channels, *down.shape[1:])

    def __repr__(self) -> str:
        return "quality_gated_lora." + super().__repr__()
