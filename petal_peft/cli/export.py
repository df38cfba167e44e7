"""``petal-peft export``: ship an adapted model.

``petal-peft export onnx --model BASE --adapter ADAPTER --out DIR`` writes the proxy encoders and the gated model
as ONNX (checked against PyTorch with onnxruntime) plus ``export_card.json``;
``petal-peft export proxy --model BASE --adapter ADAPTER --out DIR`` writes the two proxy encoders as plain
transformers checkpoints.
"""

from __future__ import annotations

import argparse

from .common import (
    Subcommand,
    add_estimator_arguments,
    add_image_arguments,
    add_model_arguments,
    add_output_arguments,
    add_progress_argument,
    add_subcommands,
    estimator_options,
    image_options,
)


def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, extra="; loaded with AutoModel", adapter_required=True)
    add_output_arguments(
        p,
        required=True,
        out="output folder: new or empty (an existing one needs --overwrite; only the export's own files are ever "
        "replaced, nothing else in it is touched)",
        overwrite="write into an existing, non-empty --out: replace a previous export there, leave everything else",
    )
    add_progress_argument(p)


def _onnx_arguments(p: argparse.ArgumentParser) -> None:
    from petal_peft.export.onnx import DEFAULT_OPSET, PARTS
    from petal_peft.export.parity import DEFAULT_TOLERANCE

    _add_source_arguments(p)
    p.add_argument("--parts", nargs="+", choices=PARTS, help="which graphs to export (default: all that apply)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ai.onnx opset (default {DEFAULT_OPSET})")
    add_image_arguments(p, recorded=True)
    add_estimator_arguments(p, what="for gated_estimator; overrides the adapter's")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch parity check")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest max|onnx - torch| / max|torch| accepted (default {DEFAULT_TOLERANCE:g})",
    )


def run_onnx(args: argparse.Namespace) -> int:
    from petal_peft.export import export_onnx, load_export_card

    paths = export_onnx(
        args.model,
        args.adapter,
        args.out,
        parts=args.parts,
        opset=args.opset,
        **image_options(args),
        **estimator_options(args),
        check=not args.no_check,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
    )
    card = load_export_card(args.out)
    for part, entry in card["models"].items():
        diff = entry.get("max_relative_difference_vs_torch")
        checked = f"max relative difference vs PyTorch {max(diff.values()):.1e}" if diff else "not checked"
        print(f"{paths[part]}  ({checked})")
    for part, why in card.get("skipped", {}).items():
        print(f"skipped {part}: {why}")
    print(f"card: {paths['card']}")
    return 0


def run_proxy(args: argparse.Namespace) -> int:
    from petal_peft import export_proxy_encoders
    from petal_peft.export import load_adapter, load_base_model
    from petal_peft.outputs import check_output_folder

    check_output_folder(args.out, overwrite=args.overwrite)  # before the model is loaded
    peft_model = load_adapter(load_base_model(args.model), args.adapter)
    paths = export_proxy_encoders(peft_model, args.out)
    for path in paths.values():
        print(path)
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = "Export a quality-gated adapter for deployment."
    formats = {
        "onnx": Subcommand(
            "gallery/probe proxy encoders and the gated model as ONNX, checked with onnxruntime",
            "Writes gallery_encoder.onnx and probe_encoder.onnx (adapter merged at q=1 / q=0), gated.onnx (inputs "
            "pixel_values and quality) and, when the adapter has a quality estimator that exports, "
            "gated_estimator.onnx (estimator and gate inside), with a dynamic batch, plus export_card.json. Needs "
            "the onnx extra (pip install -e '.[onnx]' in the petal-peft clone).",
            _onnx_arguments,
            run_onnx,
        ),
        "proxy": Subcommand(
            "the two proxy encoders as transformers checkpoints (loadable without petal-peft)",
            "Writes gallery_encoder/ (adapter merged at q=1) and probe_encoder/ (q=0).",
            _add_source_arguments,
            run_proxy,
        ),
    }
    add_subcommands(parser, "format", "FORMAT", formats)
