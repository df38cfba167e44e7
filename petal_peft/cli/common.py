"""The flags several subcommands share, defined once, and the one style of every flag.

Style: ``--words-with-dashes`` (``--words_with_underscores`` accepted as an alias, not shown in ``--help``),
``--out`` for what a command writes, ``--no-progress`` for quiet runs, ``--json`` for machine-readable results on
stdout, and a help text on every flag. Nothing here imports torch: ``petal-peft --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = [
    "CliHelpFormatter",
    "DTYPES",
    "accept_underscore_aliases",
    "add_device_arguments",
    "add_estimator_arguments",
    "add_image_arguments",
    "add_json_argument",
    "add_model_argument",
    "add_progress_argument",
    "check_local_model_path",
    "json_object",
    "print_json",
]

DTYPES = ("float32", "float16", "bfloat16")


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``'{"key": 1}'``)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def add_model_argument(p: argparse._ActionsContainer, required: bool = True, extra: str = "") -> None:
    p.add_argument(
        "--model",
        required=required,
        help="base model: local folder or Hub id (its preprocessor config gives the normalisation)" + extra,
    )


def add_estimator_arguments(p: argparse._ActionsContainer, what: str = "overrides or adds to the adapter's") -> None:
    p.add_argument("--quality-estimator", help=f"registered quality estimator, e.g. resolution or brisque ({what})")
    p.add_argument(
        "--quality-estimator-kwargs", type=json_object, default={}, help="JSON object of arguments for the estimator"
    )


def add_image_arguments(p: argparse._ActionsContainer, recorded: bool = False) -> None:
    where = " recorded in the card" if recorded else ""
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the model config's image_size)")
    p.add_argument("--image-mean", type=float, nargs="+", help=f"normalisation mean{where} (1 or 3 values)")
    p.add_argument("--image-std", type=float, nargs="+", help=f"normalisation std{where} (1 or 3 values)")


def add_device_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for image decoding")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ... (default auto)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights and activations dtype (default float32)")


def add_progress_argument(p: argparse._ActionsContainer) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_json_argument(p: argparse._ActionsContainer) -> None:
    p.add_argument(
        "--json", action="store_true", help="print the results as one JSON document on stdout (messages go to stderr)"
    )


def print_json(obj: Any) -> None:
    """``obj`` as JSON on stdout (strict: NaN becomes null)."""
    print(json.dumps(_strict(obj), indent=2))


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subparser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def accept_underscore_aliases(parser: argparse.ArgumentParser) -> None:
    """Give every ``--dashed-flag`` of ``parser`` and its subparsers an ``--underscored_flag`` alias and every
    ``--underscored_flag`` a ``--dashed-flag`` one; dashed names come first (the ones ``--help`` shows)."""
    for p in _parsers(parser):
        for action in p._actions:
            names = list(action.option_strings)
            if not names:
                continue
            for name in list(names):
                if not name.startswith("--"):
                    continue
                for variant in ("--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if variant not in names and variant not in p._option_string_actions:
                        names.append(variant)
                        p._option_string_actions[variant] = action
            short = [n for n in names if not n.startswith("--")]
            dashed = [n for n in names if n.startswith("--") and "_" not in n]
            rest = [n for n in names if n.startswith("--") and "_" in n]
            action.option_strings = short + dashed + rest


class CliHelpFormatter(argparse.HelpFormatter):
    """Shows each flag under its dashed names only (the underscored aliases still work) and appends
    "(default: X)" to a help text that does not state its default yet."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        shown = [n for n in action.option_strings if "_" not in n] or action.option_strings[:1]
        saved = action.option_strings
        action.option_strings = shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default in (None, argparse.SUPPRESS, False, True, {}, [])
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


def check_local_model_path(name: str | None, flag: str = "--model") -> None:
    """Refuse a model name that is meant as a local folder but does not exist, before transformers takes it for
    a Hub id and reports a network error: a path that starts with ``/``, ``./``, ``../`` or ``~``, ends with a
    separator, has more than one ``/`` or whose first part is a local folder."""
    if not name or os.path.exists(name):
        return
    first = name.replace("\\", "/").split("/", 1)[0]
    looks_local = (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or name.endswith(("/", "\\"))
        or "\\" in name
        or name.count("/") > 1
        or (("/" in name) and os.path.isdir(first))
    )
    if looks_local:
        raise FileNotFoundError(f"{flag} {name}: no such folder.")
