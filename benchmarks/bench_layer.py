"""Speed of one adapted layer: frozen base vs PEFT LoRA r=16 vs quality-gated LoRA r=8 (2 x 8 units).

Two cases, each forward + backward in training mode, with an input that requires grad (as inside a network):

* ``linear``: a ViT-S qkv projection (384 -> 1152), x [32, 197, 384];
* ``conv``: an IResNet-50 stage-3 3x3 convolution (256 -> 256, padding 1, no bias), x [32, 256, 14, 14].

PEFT's LoRA at rank 16 and ours at 2 x 8 train the same number of parameters. The three layers of a case are timed
in the same run, interleaved so that machine noise hits all alike, and reported as medians (and the fastest run)
with ratios to the frozen base. ``--clock cpu`` times the process's CPU time instead of the wall clock: on a machine
shared with other work, CPU time at one thread measures the work done rather than the waiting. Usage:
python benchmarks/bench_layer.py [--case all|linear|conv] [--repeats 30] [--threads 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import petal_peft

KINDS = ("frozen base", "PEFT LoRA r=16", "quality-gated r=8 (ours)")


class _Wrapper(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.proj = layer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)


def build(kind: str, make_layer: Callable[[], nn.Module], dropout: float) -> nn.Module:
    torch.manual_seed(0)
    model = _Wrapper(make_layer())
    if kind == "frozen base":
        model.requires_grad_(False)
        return model.train()
    if kind.startswith("PEFT"):
        config = LoraConfig(r=16, lora_alpha=16, lora_dropout=dropout, target_modules=["proj"])
    else:
        config = petal_peft.QualityGatedLoraConfig(r=8, lora_alpha=8, lora_dropout=dropout, target_modules=["proj"])
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():  # non-zero B so the adapter math is not trivially skipped
        if "lora_B" in name:
            nn.init.normal_(param, std=0.01)
    return peft_model.train()


def step(model: nn.Module, x: torch.Tensor, quality: torch.Tensor | None) -> None:
    out = model(pixel_values=x, quality=quality) if quality is not None else model(pixel_values=x)
    out.float().pow(2).mean().backward()


def run_case(title: str, make_layer: Callable[[], nn.Module], shape: tuple[int, ...], args: argparse.Namespace) -> None:
    models = {kind: build(kind, make_layer, args.dropout) for kind in KINDS}
    x = torch.randn(*shape, requires_grad=True)
    quality = torch.rand(shape[0])
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for _ in range(3):  # warm-up
        for kind in KINDS:
            step(models[kind], x, quality if "ours" in kind else None)
    for _ in range(args.repeats):
        for kind in KINDS:  # interleaved so that machine noise hits all three alike
            x.grad = None
            start = clock()
            step(models[kind], x, quality if "ours" in kind else None)
            times[kind].append(clock() - start)
    base_median, base_min = statistics.median(times[KINDS[0]]), min(times[KINDS[0]])
    print(
        f"{title}: x {list(x.shape)}, train mode, forward+backward, {args.threads} threads, {args.repeats} runs, "
        f"{args.clock} clock"
    )
    print(f"{'layer':28s} {'median ms':>10s} {'vs base':>8s} {'min ms':>8s} {'vs base':>8s}")
    for kind in KINDS:
        median, fastest = statistics.median(times[kind]), min(times[kind])
        print(
            f"{kind:28s} {median * 1e3:10.2f} {median / base_median:7.2f}x {fastest * 1e3:8.2f} "
            f"{fastest / base_min:7.2f}x"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=("all", "linear", "conv"), default="all")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.1, help="lora_dropout of both adapters")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall-clock or process CPU time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case in ("all", "linear"):
        run_case(
            "ViT-S qkv linear 384 -> 1152",
            lambda: nn.Linear(384, 3 * 384),
            (args.batch, 197, 384),
            args,
        )
    if args.case in ("all", "conv"):
        run_case(
            "IResNet-50 3x3 conv 256 -> 256",
            lambda: nn.Conv2d(256, 256, 3, padding=1, bias=False),
            (args.batch, 256, 14, 14),
            args,
        )


if __name__ == "__main__":
    main()
