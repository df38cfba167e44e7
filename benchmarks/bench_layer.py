"""Speed of one adapted linear layer: frozen base vs PEFT LoRA r=16 vs quality-gated LoRA r=8 (2 x 8 units).

A ViT-S qkv projection (384 -> 1152), x [32, 197, 384] that requires grad (as inside a network), training mode,
forward + backward. All three are timed in the same run, interleaved, and reported as medians and ratios to the
frozen base. Usage: python benchmarks/bench_layer.py [--repeats 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import petal_peft


class _Wrapper(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.proj = linear

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)


def build(kind: str, in_features: int, out_features: int) -> nn.Module:
    torch.manual_seed(0)
    model = _Wrapper(nn.Linear(in_features, out_features))
    if kind == "frozen base":
        model.requires_grad_(False)
        return model.train()
    if kind == "PEFT LoRA r=16":
        config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.1, target_modules=["proj"])
    else:
        config = petal_peft.QualityGatedLoraConfig(r=8, lora_alpha=8, lora_dropout=0.1, target_modules=["proj"])
    peft_model = get_peft_model(model, config)
    for module in peft_model.modules():  # non-zero B so the adapter math is not trivially skipped anywhere
        if isinstance(module, nn.Linear) and module.out_features == out_features and module.in_features <= 16:
            nn.init.normal_(module.weight, std=0.01)
    return peft_model.train()


def step(model: nn.Module, x: torch.Tensor, quality: torch.Tensor | None) -> None:
    out = model(pixel_values=x, quality=quality) if quality is not None else model(pixel_values=x)
    out.float().pow(2).mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ["frozen base", "PEFT LoRA r=16", "quality-gated r=8 (ours)"]
    models = {kind: build(kind, args.dim, 3 * args.dim) for kind in kinds}
    x = torch.randn(args.batch, args.tokens, args.dim, requires_grad=True)
    quality = torch.rand(args.batch)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(3):  # warm-up
        for kind in kinds:
            step(models[kind], x, quality if "ours" in kind else None)
    for _ in range(args.repeats):
        for kind in kinds:  # interleaved so that machine noise hits all three alike
            x.grad = None
            start = time.perf_counter()
            step(models[kind], x, quality if "ours" in kind else None)
            times[kind].append(time.perf_counter() - start)
    base = statistics.median(times["frozen base"])
    print(f"x {list(x.shape)}, {args.dim} -> {3 * args.dim}, train mode, forward+backward, {args.threads} threads")
    print(f"{'layer':28s} {'median ms':>10s} {'vs base':>8s}")
    for kind in kinds:
        median = statistics.median(times[kind])
        print(f"{kind:28s} {median * 1e3:10.2f} {median / base:7.2f}x")


if __name__ == "__main__":
    main()
