"""Inference speed of an adapted face model on this CPU: base, gated, merged proxy encoder, its ONNX export, estimator.

For each model (a ViT-S-sized face transformer at 112 px with random weights, and the small shipped base), the
script builds a quality-gated adapter (rank 8 on the default targets, ``resolution`` estimator, non-zero B) and
times, interleaved within each repeat so that machine noise hits every row alike, one forward of:

* ``base``: the base model alone (PyTorch);
* ``gated``: the live adapter, quality estimated per image inside the forward (PyTorch);
* ``merged proxy``: the adapter merged at q = 0 (the probe encoder; PyTorch): must cost what the base costs;
* ``merged proxy, ONNX``: that encoder exported with torch.onnx (dynamo) and run by onnxruntime;
* ``gated, ONNX``: the gated model with estimator and gate inside the graph, under onnxruntime;
* ``estimator``: the quality estimator and gate alone.

The order of the rows rotates from one repeat to the next.
Reported per batch size (1 and 64): median latency per call, images/s, and the median of the per-repeat ratio to
the base with its interquartile range. PyTorch and onnxruntime get the same number of threads. Synthetic inputs
(random pixels); the speed of these models does not depend on the pixel values.

Usage: python benchmarks/bench_inference.py [--threads 2] [--repeats-64 7] [--repeats-1 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import transformers as T
from peft import get_peft_model

import petal_peft
from petal_peft.embedding import pooled_embedding
from petal_peft.export import (
    EmbeddingEncoder,
    SelfGatedEncoder,
    export_module,
    max_relative_difference,
    onnx_session,
)


def vit_s_112(patch: int) -> T.ViTModel:
    """ViT-S widths (384, 6 heads, 12 layers, MLP 1536) at 112 px; random weights."""
    torch.manual_seed(0)
    config = T.ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=112,
        patch_size=patch,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return T.ViTModel(config).eval()


def shipped_base() -> torch.nn.Module:
    from petal_peft.zoo import get_pretrained_base

    return get_pretrained_base()[0].eval()


def adapt(base: torch.nn.Module) -> torch.nn.Module:
    config = petal_peft.QualityGatedLoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, quality_estimator="resolution")
    model = get_peft_model(copy.deepcopy(base), config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.eval()


def build_rows(
    base: torch.nn.Module, threads: int, workdir: str
) -> tuple[dict[str, Callable[[torch.Tensor], object]], dict[str, float]]:
    """name -> callable(x) for every timed row, and the parity of the ONNX rows vs PyTorch."""
    # a copy, so that the base weights live in ordinary memory like the merged copy's (not memory-mapped from a
    # safetensors file, as from_pretrained leaves them)
    base = copy.deepcopy(base).eval()
    model = adapt(base)
    merged = petal_peft.merged_encoder(model, 0.0).eval()
    # the merged encoder is the base architecture with other weights: same modules, same parameter count
    assert type(merged) is type(base) and not any("lora" in name for name, _ in merged.named_parameters())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    function = model.base_model.quality_function()
    size = base.config.image_size
    example = torch.randn(2, 3, size, size)
    merged_path = export_module(
        EmbeddingEncoder(merged), [example], os.path.join(workdir, "merged.onnx"), ["pixel_values"], ["embedding"]
    )
    gated_path = export_module(
        SelfGatedEncoder(model, function.estimator, function.gate),
        [example],
        os.path.join(workdir, "gated.onnx"),
        ["pixel_values"],
        ["embedding", "quality", "quality_score"],
    )
    merged_session = onnx_session(merged_path, threads=threads)
    gated_session = onnx_session(gated_path, threads=threads)

    def onnx_row(session):
        def run(x: torch.Tensor) -> object:
            return session.run(None, {"pixel_values": x.numpy()})

        return run

    rows = {
        "base": lambda x: base(pixel_values=x),
        "gated": lambda x: model(pixel_values=x),
        "merged proxy": lambda x: merged(pixel_values=x),
        "merged proxy, ONNX": onnx_row(merged_session),
        "gated, ONNX": onnx_row(gated_session),
        "estimator": lambda x: function(x),
    }
    check = torch.randn(4, 3, size, size)
    with torch.no_grad():
        parity = {
            "merged proxy, ONNX": max_relative_difference(
                merged_session.run(None, {"pixel_values": check.numpy()})[0],
                pooled_embedding(merged(pixel_values=check)),
            ),
            "gated, ONNX": max_relative_difference(
                gated_session.run(None, {"pixel_values": check.numpy()})[0], pooled_embedding(model(pixel_values=check))
            ),
        }
    return rows, parity


def time_rows(rows: dict[str, Callable], x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.inference_mode():
        for fn in rows.values():  # warm-up (allocations, onnxruntime's first-run planning)
            fn(x)
            fn(x)
        names = list(rows)
        for r in range(repeats):
            # rotate the order every repeat, so that no row always runs first (cold caches) or after a given row
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                rows[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], batch: int) -> dict[str, dict[str, float]]:
    base = np.asarray(times["base"])
    out = {}
    for name, values in times.items():
        v = np.asarray(values)
        ratios = v / base  # paired within each repeat
        out[name] = {
            "median_ms": 1e3 * float(np.median(v)),
            "images_per_s": batch / float(np.median(v)),
            "ratio_to_base": float(np.median(ratios)),
            "ratio_q1": float(np.quantile(ratios, 0.25)),
            "ratio_q3": float(np.quantile(ratios, 0.75)),
        }
    return out


def print_table(title: str, results: dict[int, dict[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'':22s}" + "".join(f"{'batch ' + str(b):>36s}" for b in results))
    print(f"{'row':22s}" + "".join(f"{'ms':>9s}{'img/s':>9s}{'vs base (IQR)':>18s}" for _ in results))
    for name in next(iter(results.values())):
        cells = ""
        for stats in results.values():
            s = stats[name]
            iqr = f"{s['ratio_to_base']:.2f} ({s['ratio_q1']:.2f}-{s['ratio_q3']:.2f})"
            cells += f"{s['median_ms']:9.2f}{s['images_per_s']:9.0f}{iqr:>18s}"
        print(f"{name:22s}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--repeats-1", type=int, default=40, help="interleaved repeats at batch 1")
    parser.add_argument("--repeats-64", type=int, default=7, help="interleaved repeats at batch 64")
    parser.add_argument("--patch", type=int, default=14, help="patch size of the ViT-S model at 112 px")
    parser.add_argument("--models", nargs="+", default=["vit-s-112", "shipped"], choices=["vit-s-112", "shipped"])
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(
        f"torch {torch.__version__}, {args.threads} threads (torch and onnxruntime); load average at start "
        f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} (1/5/15 min); random-pixel inputs"
    )
    report: dict = {"threads": args.threads, "load_average_start": load_start, "models": {}}
    for which in args.models:
        base = vit_s_112(args.patch) if which == "vit-s-112" else shipped_base()
        size = base.config.image_size
        tokens = (size // base.config.patch_size) ** 2 + 1
        params = sum(p.numel() for p in base.parameters())
        title = (
            f"{which}: ViT hidden {base.config.hidden_size}, {base.config.num_hidden_layers} layers, {size} px, "
            f"{tokens} tokens, {params / 1e6:.1f}M parameters"
        )
        with tempfile.TemporaryDirectory() as workdir:
            rows, parity = build_rows(base, args.threads, workdir)
            results = {}
            for batch, repeats in ((1, args.repeats_1), (64, args.repeats_64)):
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
                results[batch] = summarise(time_rows(rows, x, repeats), batch)
        print_table(title, results)
        print("ONNX vs PyTorch, max relative difference: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
        report["models"][which] = {"title": title, "results": results, "onnx_parity": parity}
    load_end = os.getloadavg()
    report["load_average_end"] = load_end
    print(f"\nload average at end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print("medians over interleaved repeats; 'vs base' = median of per-repeat time ratios (IQR in brackets)")


if __name__ == "__main__":
    main()
