"""``petal-peft train``: adapt a face transformer with a quality-gated adapter (the flags of
``examples/train_tinyface.py``, one per :class:`~petal_peft.training.FaceAdapterTrainingConfig` field).

Run it under ``accelerate launch -m petal_peft.cli train ...`` (or ``torchrun``) for several processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

#: flag names every subcommand shares, added to the config's own (dest -> extra option strings, first shown)
ALIASES = {"output_dir": ("--out",), "overwrite_output_dir": ("--overwrite",)}


def _add_aliases(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        extra = ALIASES.get(action.dest) if not isinstance(action, argparse._StoreFalseAction) else None
        if action.dest == "progress_bar" and isinstance(action, argparse._StoreFalseAction):
            extra = ("--no-progress",)
        for name in extra or ():
            action.option_strings = [name, *action.option_strings]
            parser._option_string_actions[name] = action


def register(parser: argparse.ArgumentParser) -> None:
    from petal_peft.training.config import config_argument_parser

    parser.description = (
        "Adapt a pretrained face transformer to low-resolution faces with a quality-gated adapter. With no flags: "
        "the embedded default (the small bundled base, CPU, minutes). The gate is calibrated on the training "
        "images at the start unless --gate-threshold and --gate-temperature are given."
    )
    config_flags = config_argument_parser(add_help=False)  # one flag per FaceAdapterTrainingConfig field
    parser._add_container_actions(config_flags)
    parser._defaults.update(config_flags._defaults)
    _add_aliases(parser)
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    """The training config the parsed flags describe (its validation errors are the user's)."""
    from petal_peft.training import FaceAdapterTrainingConfig

    names = {f.name for f in dataclasses.fields(FaceAdapterTrainingConfig) if f.init}
    return FaceAdapterTrainingConfig(**{k: v for k, v in vars(args).items() if k in names})


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues an interrupted run: the same flags with ``--resume-from-checkpoint
    latest`` (and without ``--overwrite``, which would start afresh)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for arg in argv:
        name = arg.split("=", 1)[0].replace("_", "-")
        if skip:
            skip = False
            if not arg.startswith("-"):
                continue
        if name in ("--overwrite", "--overwrite-output-dir"):
            continue
        if name == "--resume-from-checkpoint":
            skip = "=" not in arg
            continue
        kept.append(arg)
    return shlex.join(["petal-peft", *kept, "--resume-from-checkpoint", "latest"])


def run_train(args: argparse.Namespace) -> int:
    from petal_peft.cli import CliError
    from petal_peft.data import DataValidationError
    from petal_peft.training import format_metrics_table, train

    config = config_from_args(args)
    if config.checkpointing_steps:
        args.interrupt_hint = lambda: f"resume with: {resume_command(getattr(args, 'argv', None))}"
    else:
        args.interrupt_hint = lambda: "no checkpoint was saved (--checkpointing-steps 0), so a rerun starts afresh"
    try:
        result = train(config)
    except DataValidationError as err:
        raise CliError(f"bad training data: {err}") from err
    if result.adapter_dir is not None:  # main process
        print(f"\nTrained on: {result.train_description}")
        print(format_metrics_table(result.metrics_before, result.metrics_after))
        steps = f"{result.steps_run} steps"
        if result.resumed_from:
            steps += f" (resumed at step {result.global_step - result.steps_run} of {result.total_steps})"
        print(f"{steps} in {result.runtime_s:.0f} s; adapter and head saved to {result.adapter_dir}")
        if result.hub_url:
            print(f"Pushed to {result.hub_url}")
    return 0
