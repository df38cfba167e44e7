"""``petal-peft calibrate``: fit the quality gate of a saved adapter on a folder of sharp face images.

``petal-peft calibrate --model BASE --adapter DIR --images DIR [--quality-estimator resolution]``

For adapters trained before training calibrated the gate itself (their gate gives every face q = 1), or to
re-fit it on the data they will meet. The images are scored against degraded copies of themselves, the same fit
that training runs; ``adapter_config.json`` is rewritten atomically with the new threshold and temperature.
"""

from __future__ import annotations

import argparse

from .common import (
    add_estimator_arguments,
    add_json_argument,
    add_model_argument,
    add_progress_argument,
    print_json,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate",
        help="calibrate the quality gate of a trained adapter on a folder of sharp face images",
        description="Fit the gate's threshold and temperature on sharp face images against degraded copies of "
        "them (what training does at its start) and save them in the adapter's adapter_config.json.",
    )
    add_model_argument(p, extra="; gives the input size")
    p.add_argument("--adapter", required=True, help="folder of the quality-gated adapter (its config is rewritten)")
    p.add_argument("--images", required=True, help="folder of sharp face images (any tree), e.g. the gallery")
    add_estimator_arguments(p, what="default: the adapter's; given, it is saved with the gate")
    p.add_argument("--gate-mode", choices=("sigmoid", "linear", "paper"), help="gate to fit (default: the adapter's)")
    p.add_argument("--max-images", type=int, default=256, help="images drawn from the folder (default 256)")
    p.add_argument("--degrade-min-size", type=int, default=8, help="smallest short side of a degraded copy (px)")
    p.add_argument("--degrade-max-size", type=int, default=32, help="largest short side of a degraded copy (px)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample and the degradations (default 0)")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the model config's image_size)")
    p.add_argument("--dry-run", action="store_true", help="print the calibration, leave the adapter unchanged")
    add_progress_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from petal_peft.training.gate_calibration import calibrate_adapter, describe_gate

    gate = calibrate_adapter(
        args.model,
        args.adapter,
        args.images,
        quality_estimator=args.quality_estimator,
        quality_estimator_kwargs=args.quality_estimator_kwargs,
        gate_mode=args.gate_mode,
        max_images=args.max_images,
        min_size=args.degrade_min_size,
        max_size=args.degrade_max_size,
        seed=args.seed,
        image_size=args.image_size,
        write=not args.dry_run,
    )
    if args.json:
        print_json(gate)
        return 0
    print(describe_gate(gate).replace("training images", "images"))
    previous = gate["previous"]
    print(f"previous gate: threshold {previous['gate_threshold']}, temperature {previous['gate_temperature']}")
    print("not saved (--dry-run)" if args.dry_run else f"saved in {args.adapter}/adapter_config.json")
    return 0
