"""The ``petal-peft`` command line: one subcommand per module of this package.

Each module in :data:`COMMANDS` defines ``register(parser)``, which fills in the command's parser (description and
flags) and sets ``func(args) -> int`` as the default. A subcommand's flags are added only when that subcommand is
used (or its ``--help`` asked for), and heavy imports (torch, transformers) happen inside ``func``, so
``petal-peft --help`` and ``--version`` load neither. Every bad input ends as one line on stderr naming the
problem, with exit status 2 (``-v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from .common import CliHelpFormatter, accept_underscore_aliases, check_local_model_path

#: subcommand -> one-line help, in the order ``--help`` lists them (the module is ``petal_peft.cli.<name>``)
COMMANDS: dict[str, str] = {
    "train": "adapt a pretrained face transformer to low-resolution faces",
    "calibrate": "calibrate the quality gate of a trained adapter on a folder of sharp face images",
    "eval": "evaluate a model / adapter on a face benchmark",
    "convert": "convert a PETALface / insightface checkpoint into a transformers model and adapter",
    "export": "export an adapted model (ONNX, or merged proxy encoders)",
    "embed": "embed every face image below a folder (safetensors + JSON index)",
    "search": "top-k gallery identities for probe images (open-set with --threshold)",
    "verify": "same / different person, with the threshold of an evaluation report",
    "align": "align face photos to the ArcFace 112x112 template (dlib detector + 5 landmarks)",
}
#: the module that defines each subcommand (several commands may share one)
MODULES: dict[str, str] = {"search": "embed", "verify": "embed"}


class CliError(Exception):
    """A problem the user can fix, raised by a subcommand; printed as one line, exit status 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input" (a path, a file, a flag value), not a bug in petal-peft."""
    from petal_peft.extras import MissingExtraError

    errors: list[type[BaseException]] = [CliError, ValueError, TypeError, KeyError, OSError, MissingExtraError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        pass
    return tuple(errors)


def _unbullet(line: str) -> str:
    line = line.strip()
    return line[2:].strip() if line.startswith("- ") else line


def one_line(err: BaseException) -> str:
    """The exception's message on one line (KeyError's quotes dropped, continuation lines joined)."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else str(err)
    parts = [_unbullet(part) for part in str(text).splitlines() if _unbullet(part)]
    line = ""
    for part in parts:
        line += part if not line else (" " if line.endswith(":") else "; ") + part
    return line or type(err).__name__


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose flags are added by its module on first use."""

    def __init__(self, *args, command_name: str = "", **kwargs) -> None:
        kwargs.setdefault("formatter_class", CliHelpFormatter)
        super().__init__(*args, **kwargs)
        self.command_name = command_name
        self._filled = not command_name

    def fill(self) -> CommandParser:
        if not self._filled:
            self._filled = True
            module = importlib.import_module(f"{__name__}.{MODULES.get(self.command_name, self.command_name)}")
            module.register(self)
            accept_underscore_aliases(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.fill()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.fill()
        return super().format_help()

    def format_usage(self) -> str:
        self.fill()
        return super().format_usage()


def build_parser(fill: bool = False) -> argparse.ArgumentParser:
    """The ``petal-peft`` parser; ``fill=True`` adds every subcommand's flags now (they are otherwise added when
    the subcommand is used)."""
    from petal_peft import __version__

    parser = argparse.ArgumentParser(
        prog="petal-peft",
        description="petal-peft: quality-gated LoRA (PETALface) for face recognition models",
        formatter_class=CliHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"petal-peft {__version__}", help="print the version")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name, text in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", command_name=name)
        if fill:
            command.fill()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given, e.g. for the resume command an interrupted run prints
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # PEFT asks every model for transformers' deprecated `is_gradient_checkpointing`: not the user's business
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    import petal_peft

    petal_peft._finish_import()  # the registrations that `petal-peft` left out to start quickly
    if getattr(args, "no_progress", False) or getattr(args, "progress_bar", True) is False:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the bars of transformers' model loading
    try:
        check_local_model_path(getattr(args, "model", None))
        check_local_model_path(getattr(args, "base_model", None), "--base-model")
        return int(args.func(args) or 0)
    except user_errors() as err:
        if args.verbose:
            raise
        print(f"petal-peft {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)
        print(f"petal-peft {args.command}: interrupted" + (f"; {hint()}" if hint else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
