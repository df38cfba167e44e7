"""``petal-peft calibrate``: fit the quality gate of a saved adapter on a folder of sharp face images.

``petal-peft calibrate --model BASE --adapter DIR --images DIR [--quality-estimator resolution]``

For adapters trained before training calibrated the gate itself (their gate gives every face q = 1), or to
re-fit it on the data they will meet. The images are scored against degraded copies of themselves, the same fit
that training runs; ``adapter_config.json`` is rewritten atomically with the new threshold and temperature.
"""

from __future__ import annotations

import argparse

from .common import (
    IMAGE_SIZE_FLAG,
    add_estimator_arguments,
    add_flags,
    add_json_argument,
    add_model_arguments,
    add_progress_argument,
    estimator_options,
    flag_values,
    print_json,
)

#: the settings of the fit, passed on to :func:`~petal_peft.training.gate_calibration.calibrate_adapter`
FIT_FLAGS = {
    "--gate-mode": dict(choices=("sigmoid", "linear", "paper"), help="gate to fit (default: the adapter's)"),
    "--max-images": dict(type=int, default=256, help="images drawn from the folder (default 256)"),
    "--degrade-min-size": dict(type=int, default=8, help="smallest short side of a degraded copy (px)"),
    "--degrade-max-size": dict(type=int, default=32, help="largest short side of a degraded copy (px)"),
    "--seed": dict(type=int, default=0, help="seeds the sample and the degradations (default 0)"),
    "--image-size": IMAGE_SIZE_FLAG,
}


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Fit the gate's threshold and temperature on sharp face images against degraded copies of them (what "
        "training does at its start) and save them in the adapter's adapter_config.json."
    )
    add_model_arguments(
        p, extra="; gives the input size", adapter_required=True, adapter_note="(its config is rewritten)"
    )
    p.add_argument("--images", required=True, help="folder of sharp face images (any tree), e.g. the gallery")
    add_estimator_arguments(p, what="default: the adapter's; given, it is saved with the gate")
    add_flags(p, FIT_FLAGS)
    p.add_argument("--dry-run", action="store_true", help="print the calibration, leave the adapter unchanged")
    add_progress_argument(p)
    add_json_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petal_peft.training.gate_calibration import calibrate_adapter, describe_gate

    gate = calibrate_adapter(
        args.model,
        args.adapter,
        args.images,
        **estimator_options(args),
        **flag_values(args, FIT_FLAGS, degrade_min_size="min_size", degrade_max_size="max_size"),
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
