"""The flags several subcommands share, defined once, the helpers that pass their values on as the library's
keyword arguments, the tables that declare a command's own flags and nested subcommands, and the one style of
every flag.

Style: ``--words-with-dashes`` (``--words_with_underscores`` accepted as an alias, not shown in ``--help``),
``--out`` for what a command writes, ``--no-progress`` for quiet runs, ``--json`` for machine-readable results on
stdout, and a help text on every flag. Nothing here imports torch: ``petal-peft --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "CliHelpFormatter",
    "DTYPES",
    "IMAGE_SIZE_FLAG",
    "Subcommand",
    "accept_underscore_aliases",
    "add_device_arguments",
    "add_estimator_arguments",
    "add_flags",
    "add_image_arguments",
    "add_json_argument",
    "add_model_argument",
    "add_model_arguments",
    "add_output_arguments",
    "add_progress_argument",
    "add_subcommands",
    "check_local_model_path",
    "embedder_options",
    "flag_values",
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


def add_model_arguments(
    p: argparse._ActionsContainer,
    *,
    required: bool = True,
    extra: str = "",
    adapter_required: bool = False,
    adapter_note: str = "trained on --model",
    proxy_encoders: bool = False,
) -> None:
    """What a command loads: ``--model``, ``--adapter`` and, with ``proxy_encoders``, ``--proxy-encoders``."""
    add_model_argument(p, required=required, extra=extra)
    article = "the" if adapter_required else "a"
    p.add_argument(
        "--adapter", required=adapter_required, help=f"folder of {article} quality-gated adapter {adapter_note}"
    )
    if proxy_encoders:
        p.add_argument(
            "--proxy-encoders", help="folder written by petal-peft export proxy (gallery_encoder/, probe_encoder/)"
        )


def add_output_arguments(
    p: argparse._ActionsContainer,
    out: str,
    overwrite: str = "replace an existing --out file",
    required: bool = False,
) -> None:
    """``--out`` (help text ``out``) and the ``--overwrite`` that lets it replace what is there."""
    p.add_argument("--out", required=required, help=out)
    p.add_argument("--overwrite", action="store_true", help=overwrite)


def add_estimator_arguments(p: argparse._ActionsContainer, what: str = "overrides or adds to the adapter's") -> None:
    p.add_argument("--quality-estimator", help=f"registered quality estimator, e.g. resolution or brisque ({what})")
    p.add_argument(
        "--quality-estimator-kwargs", type=json_object, default={}, help="JSON object of arguments for the estimator"
    )


def estimator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :func:`add_estimator_arguments`' flags, as the library's keyword arguments."""
    return {"quality_estimator": args.quality_estimator, "quality_estimator_kwargs": args.quality_estimator_kwargs}


def embedder_options(
    args: argparse.Namespace, adapter: str = "adapter", proxy_encoders: str = "proxy_encoders"
) -> dict[str, Any]:
    """The flags that choose and run the embedding network (``--adapter``, ``--proxy-encoders``, the quality
    estimator, ``--no-flip``, ``--batch-size``) as the embedder builders' keyword arguments; ``adapter`` and
    ``proxy_encoders`` are the builder's names for the two folders."""
    return {
        adapter: args.adapter,
        proxy_encoders: args.proxy_encoders,
        **estimator_options(args),
        "flip": not args.no_flip,
        "batch_size": args.batch_size,
    }


#: ``--image-size``'s add_argument keywords (also for commands that take no normalisation flags)
IMAGE_SIZE_FLAG: dict[str, Any] = {"type": int, "help": "input size in pixels (default: the model config's image_size)"}


def add_image_arguments(p: argparse._ActionsContainer, recorded: bool = False) -> None:
    where = " recorded in the card" if recorded else ""
    p.add_argument("--image-size", **IMAGE_SIZE_FLAG)
    p.add_argument("--image-mean", type=float, nargs="+", help=f"normalisation mean{where} (1 or 3 values)")
    p.add_argument("--image-std", type=float, nargs="+", help=f"normalisation std{where} (1 or 3 values)")


def image_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :func:`add_image_arguments`' flags, as the library's keyword arguments."""
    return {"image_size": args.image_size, "image_mean": args.image_mean, "image_std": args.image_std}


def add_device_arguments(p: argparse._ActionsContainer) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for image decoding")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ... (default auto)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weights and activations dtype (default float32)")


def add_flags(p: argparse._ActionsContainer, flags: dict[str, dict[str, Any]]) -> None:
    """Declare a table of flags, ``{"--flag": add_argument's keywords}``, in its order."""
    for flag, spec in flags.items():
        p.add_argument(flag, **spec)


def flag_values(args: argparse.Namespace, flags: dict[str, dict[str, Any]], **renamed: str) -> dict[str, Any]:
    """The values of a table of flags (see :func:`add_flags`) as keyword arguments: each under its flag's name
    (``--max-images`` -> ``max_images``) or, for the names in ``renamed``, under the library's."""
    dests = [spec.get("dest", flag[2:].replace("-", "_")) for flag, spec in flags.items()]
    return {renamed.get(dest, dest): getattr(args, dest) for dest in dests}


class Subcommand(NamedTuple):
    """One row of a table of nested subcommands (see :func:`add_subcommands`)."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_subcommands(parser: argparse.ArgumentParser, dest: str, metavar: str, commands: dict[str, Subcommand]) -> None:
    """Nested subcommands (``convert KIND``, ``export FORMAT``) from a table ``{name: Subcommand}``; one of them
    must be given, and its name is stored as ``dest``."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, required=True)
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(func=command.run)


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
