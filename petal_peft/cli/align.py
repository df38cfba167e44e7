"""``petal-peft align``: align every face photo of a folder tree (detect, 5 landmarks, warp to a template).

``petal-peft align SRC (DST | --out DST) [--size 112] [--template arcface|dlib] [--fallback whole-image|resize|skip]``

Needs the ``align`` extra (dlib and its landmark model; in the clone: ``pip install -e '.[align]'``).
"""

from __future__ import annotations

import argparse

from .common import add_flags, add_progress_argument, flag_values


def alignment_flags() -> dict[str, dict]:
    """The flags passed on to :func:`~petal_peft.align.folder.align_folder` under their own names."""
    from petal_peft.align.aligner import FALLBACKS
    from petal_peft.align.geometry import TEMPLATES

    return {
        "--size": dict(type=int, default=112, help="output size in pixels (default 112)"),
        "--template": dict(
            choices=TEMPLATES,
            default="arcface",
            help="arcface: insightface's 112x112 crop geometry scaled to --size (default); dlib: dlib's face chip",
        ),
        "--padding": dict(type=float, default=0.25, help="dlib template only: context around the face"),
        "--margin": dict(type=int, default=0, help="extra pixels of context on every side"),
        "--fallback": dict(
            choices=FALLBACKS,
            default="whole-image",
            help="when no face is detected: landmarks inside the whole image (default), resize the whole image, "
            "or skip",
        ),
        "--workers": dict(type=int, default=1, help="processes aligning in parallel (default 1)"),
        "--jpeg-quality": dict(type=int, default=95, help="quality of JPEG outputs (default 95)"),
    }


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Align every image under SRC into DST (same relative paths; other files copied). Images where no face is "
        "found are kept (see --fallback) and listed in DST/align_report.json."
    )
    p.add_argument("source", help="folder of images (any tree, e.g. <identity>/<image>)")
    p.add_argument(
        "destination", nargs="?", help="output folder (must be new or empty unless --overwrite); or give --out"
    )
    p.add_argument("--out", help="output folder (the same as the DESTINATION argument)")
    add_flags(p, alignment_flags())
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    add_progress_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petal_peft.align.folder import align_folder
    from petal_peft.cli import CliError

    if (args.destination is None) == (args.out is None):
        raise CliError("give the output folder once: as DESTINATION or as --out.")
    try:
        report = align_folder(
            args.source,
            args.destination or args.out,
            **flag_values(args, alignment_flags()),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ImportError as err:
        raise CliError(str(err)) from None
    print(report.summary())
    return 0
