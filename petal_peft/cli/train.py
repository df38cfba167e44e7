"""``petal-peft train``: adapt a face transformer with a quality-gated adapter (the flags of
``examples/train_tinyface.py``, one per :class:`~petal_peft.training.FaceAdapterTrainingConfig` field).

Run it under ``accelerate launch -m petal_peft.cli train ...`` (or ``torchrun``) for several processes.
"""

from __future__ import annotations

import argparse
import dataclasses


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from petal_peft.training.config import ConfigHelpFormatter, config_argument_parser

    parser = subparsers.add_parser(
        "train",
        parents=[config_argument_parser(add_help=False)],
        formatter_class=ConfigHelpFormatter,
        help="adapt a pretrained face transformer to low-resolution faces",
        description="Adapt a pretrained face transformer to low-resolution faces with a quality-gated adapter. "
        "With no flags: the embedded default (the small bundled base, CPU, minutes).",
    )
    parser.set_defaults(func=run_train)
    return parser


def config_from_args(args: argparse.Namespace):
    """The training config the parsed flags describe (its validation errors are the user's)."""
    from petal_peft.training import FaceAdapterTrainingConfig

    names = {f.name for f in dataclasses.fields(FaceAdapterTrainingConfig) if f.init}
    return FaceAdapterTrainingConfig(**{k: v for k, v in vars(args).items() if k in names})


def run_train(args: argparse.Namespace) -> int:
    from petal_peft.cli import CliError
    from petal_peft.data import DataValidationError
    from petal_peft.training import format_metrics_table, train

    try:
        result = train(config_from_args(args))
    except DataValidationError as err:
        raise CliError(f"bad training data: {err}") from err
    if result.adapter_dir is not None:  # main process
        print(f"\nTrained on: {result.train_description}")
        print(format_metrics_table(result.metrics_before, result.metrics_after))
        print(f"{result.global_step} steps in {result.runtime_s:.0f} s; adapter and head saved to {result.adapter_dir}")
        if result.hub_url:
            print(f"Pushed to {result.hub_url}")
    return 0
