"""``petal-peft eval``: evaluate a model, an adapter or proxy encoders on a face benchmark.

``petal-peft eval --model BASE [--adapter DIR | --proxy-encoders DIR] --benchmark tinyface \
    --data DIR --out DIR``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    add_device_arguments,
    add_estimator_arguments,
    add_image_arguments,
    add_json_argument,
    add_model_arguments,
    add_output_arguments,
    add_progress_argument,
    embedder_options,
    image_options,
    print_json,
)


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from petal_peft.evaluation import EVALUATORS

    add_model_arguments(
        p, extra="; loaded with AutoModel", adapter_note="(PeftModel.from_pretrained)", proxy_encoders=True
    )
    p.add_argument("--benchmark", required=True, choices=EVALUATORS.names(), help="which benchmark protocol")
    p.add_argument("--data", required=True, help="benchmark data: TinyFace folder, .bin / pair list, IJB root")
    add_output_arguments(
        p,
        required=True,
        out="output folder for the JSON report and plots (may hold other reports; an existing report of this "
        "benchmark needs --overwrite)",
        overwrite="replace an existing report (and plots) in --out",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        choices=("plain", "gate", "proxy"),
        help="embedding modes to run and compare: plain = base model without adapter, gate = adapter with "
        "per-image quality, proxy = encoders merged at q=1 (gallery) / q=0 (probe). Default: all that apply.",
    )
    add_estimator_arguments(p, what="for the gate mode; overrides the adapter's")
    p.add_argument(
        "--pair-role",
        choices=("gallery", "probe"),
        default="gallery",
        help="proxy mode on verification / IJB: which encoder embeds both sides of a pair (default: gallery, q=1)",
    )
    add_device_arguments(p)
    p.add_argument("--no-flip", action="store_true", help="disable the flip test (not the paper's protocol)")
    add_image_arguments(p)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 10, 20], help="tinyface: CMC ranks to report")
    p.add_argument("--ijb-subset", choices=("ijbb", "ijbc"), help="ijb: which set (default: detected from meta/)")
    p.add_argument(
        "--tar-method",
        choices=("nearest", "at_most"),
        default="nearest",
        help="ijb: TAR at the ROC point nearest to each FAR (insightface/CVLface) or best with FAR <= target",
    )
    p.add_argument("--no-detector-score", action="store_true", help="ijb: do not weight images by detector score")
    p.add_argument("--no-plots", action="store_true", help="write the JSON report only, no plots")
    add_progress_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from petal_peft.embedding.loading import load_base_model
    from petal_peft.embedding.runtime import resolve_device
    from petal_peft.evaluation import build_embedders, build_transform, evaluate
    from petal_peft.inference.provenance import (
        adapter_file_fingerprint,
        base_model_fingerprint,
        proxy_adapter_fingerprint,
        weights_record,
    )
    from petal_peft.outputs import check_output_folder

    check_output_folder(args.out, overwrite=args.overwrite, existing_ok=True)  # before the model is loaded
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    base = load_base_model(args.model, dtype=torch.float32)  # fingerprinted in float32, then cast
    base_weights = base_model_fingerprint(base)
    base.to(device=device, dtype=dtype).eval()
    embedders, settings = build_embedders(
        base,
        **embedder_options(args, adapter="adapter_path", proxy_encoders="proxy_encoders_path"),
        modes=args.modes,
        pair_role=args.pair_role,
        num_workers=args.num_workers,
        device=device,
        progress=not args.no_progress,
    )
    # after build_embedders, whose loader names a damaged adapter in one line
    weights = weights_record(
        base_weights,
        adapter_file_fingerprint(args.adapter)
        if args.adapter
        else (proxy_adapter_fingerprint(args.proxy_encoders) if args.proxy_encoders else None),
    )
    transform = build_transform(
        base,
        args.model,
        **image_options(args),
        adapter_settings=settings,
    )
    options: dict = {}
    if args.benchmark == "tinyface":
        options["ranks"] = args.ranks
    elif args.benchmark == "ijb":
        options.update(
            subset=args.ijb_subset, tar_method=args.tar_method, use_detector_score=not args.no_detector_score
        )
    report = evaluate(
        args.benchmark,
        embedders,
        args.out,
        data_path=args.data,
        transform=transform,
        evaluator_options=options,
        model_info={
            "base_model": args.model,
            "adapter": args.adapter,
            "proxy_encoders": args.proxy_encoders,
            "dtype": args.dtype,
            "flip_test": not args.no_flip,
            "gate_settings": settings,
            "weights": weights,
        },
        make_plots=not args.no_plots,
        overwrite=args.overwrite,
    )
    if args.json:
        print_json(json.loads(Path(report["report_path"]).read_text(encoding="utf-8")))
        print(f"report: {report['report_path']}", file=sys.stderr)
    else:
        print(format_summary(report))
        print(f"report: {report['report_path']}")
    return 0


def format_summary(report: dict) -> str:
    """A small text table of the headline metrics, one column per embedding mode."""
    modes = list(report["results"])
    names = report["headline_metrics"] or sorted(next(iter(report["results"].values())))
    lines = [
        f"{report['dataset']} ({report['benchmark']})",
        "metric".ljust(18) + "".join(m.rjust(12) for m in modes),
    ]
    for name in names:
        cells = []
        for m in modes:
            v = report["results"][m].get(name)
            cells.append(f"{v:12.2f}" if isinstance(v, (int, float)) else "n/a".rjust(12))
        lines.append(name.ljust(18) + "".join(cells))
    return "\n".join(lines)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Evaluate on TinyFace, 1:1 verification (.bin or pair list) or IJB-B/C; writes a JSON report and plots to "
        "--out."
    )
    add_eval_arguments(parser)
