"""Low-resolution adaptation benchmark: pretrained vs full fine-tuning vs plain LoRA vs the quality-gated adapter.

Run (defaults: 3 seeds, the shipped small face ViT, ~20 min on 2 CPU cores):

    python benchmarks/lowres_benchmark.py [--docs] [--out outputs/benchmark] [--seeds 0 1 2] [--steps 400]
    python benchmarks/lowres_benchmark.py --quick          # pipeline check: tiny random base, 1 seed, seconds
    python benchmarks/lowres_benchmark.py --real-faces olivetti      # or --faces-folder DIR (root/<id>/<img>)

The default data are the project's procedural SYNTHETIC IDENTITIES (not faces): the fast pipeline check of the
protocol that benchmarks/real_faces.py runs on real faces (LFW). Protocol, methods and a measured run:
docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from petal_peft.benchmark import BenchmarkSettings, quick_settings, run_benchmark, run_summary, write_outputs

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = BenchmarkSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=d.out, help="output folder (table, JSON, PNGs, work/)")
    p.add_argument("--docs", action="store_true", help="also write benchmark_* files into docs/images/")
    p.add_argument("--quick", action="store_true", help="1 seed, tiny random base, few steps: pipeline check")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--base", default=None, help="'pretrained' (default), 'random' or a ViT checkpoint folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--real-faces", choices=["olivetti"], default=None, help="use a real face set")
    src.add_argument("--faces-folder", default=None, help="real faces as root/<identity>/<image>")
    for name in (
        "steps",
        "batch_size",
        "adapt_identities",
        "adapt_images",
        "val_identities",
        "eval_identities",
        "distractor_identities",
        "verification_pairs",
        "lora_r",
        "num_threads",
    ):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None)
    for name in ("learning_rate", "weight_decay", "degrade_fraction", "head_scale", "head_margin"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in BenchmarkSettings.__dataclass_fields__}
    overrides.pop("quick", None)
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    if args.real_faces or args.faces_folder:
        overrides.update(source="identity_folder", faces=args.real_faces or args.faces_folder)
    if args.no_progress:
        overrides["progress"] = False
    out = overrides.pop("out", BenchmarkSettings().out)
    if args.quick:
        return quick_settings(out, **overrides)
    return BenchmarkSettings(out=out, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    results = run_benchmark(settings)
    written = write_outputs(results, settings.out, DOCS_IMAGES if args.docs else None)
    print(run_summary(results, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
