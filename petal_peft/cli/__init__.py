"""The ``petal-peft`` command line: one subcommand per module of this package.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its subparser and sets
``func(args) -> int`` as the default. Heavy imports happen inside ``func``, so ``petal-peft --help`` stays quick.
Every bad input ends as one line on stderr naming the problem, with exit status 2 (``-v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: subcommand modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = ("train", "eval", "convert", "export", "embed", "align")


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


def build_parser() -> argparse.ArgumentParser:
    from petal_peft import __version__

    parser = argparse.ArgumentParser(
        prog="petal-peft", description="petal-peft: quality-gated LoRA (PETALface) for face recognition models"
    )
    parser.add_argument("--version", action="version", version=f"petal-peft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        if args.verbose:
            raise
        print(f"petal-peft {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"petal-peft {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
