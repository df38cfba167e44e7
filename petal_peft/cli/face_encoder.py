"""The flags of ``embed``, ``search`` and ``verify`` that choose the face encoder and how images are read, and
the encoder and reading options they give."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import (
    add_device_arguments,
    add_estimator_arguments,
    add_image_arguments,
    add_model_arguments,
    add_progress_argument,
    embedder_options,
    image_options,
)

if TYPE_CHECKING:
    from petal_peft.inference.encoders import FaceEncoder


def add_encoder_arguments(p: argparse.ArgumentParser, model_required: bool) -> None:
    """The group "model (how images are embedded)": model, adapter or proxy encoders, encoder, quality estimator,
    flip test, alignment, image and device settings."""
    from petal_peft.inference.encoders import ENCODERS

    g = p.add_argument_group("model (how images are embedded)")
    add_model_arguments(g, required=model_required, proxy_encoders=True)
    g.add_argument(
        "--encoder",
        choices=ENCODERS,
        help="gate: the adapter with each image's estimated quality (default with --adapter); gallery / probe: the "
        "adapter merged at q=1 / q=0 (needed with --proxy-encoders); plain: the base alone (default otherwise)",
    )
    add_estimator_arguments(g)
    g.add_argument("--no-flip", action="store_true", help="no flip test (embed the image only, not its mirror)")
    g.add_argument("--align", action="store_true", help="detect and align faces first (needs the align extra)")
    add_image_arguments(g)
    add_device_arguments(g)
    add_progress_argument(g)


def build_encoder(args: argparse.Namespace) -> FaceEncoder:
    """The :class:`~petal_peft.inference.encoders.FaceEncoder` that :func:`add_encoder_arguments`' flags
    describe."""
    from petal_peft.inference import build_face_encoder
    from petal_peft.inference.align import require_aligner

    if args.align:
        require_aligner()
    return build_face_encoder(
        args.model,
        **embedder_options(args),
        encoder=args.encoder,
        device=args.device,
        dtype=args.dtype,
        **image_options(args),
    )


def need_model(args: argparse.Namespace, why: str) -> None:
    """Refuse to embed images without ``--model`` (optional for the commands that also read embedded indexes)."""
    from petal_peft.cli import CliError

    if not args.model:
        raise CliError(f"{why} needs --model (and --adapter or --proxy-encoders) to embed the images.")


def skip_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--skip-corrupt-images``; ``what`` names the images it applies to."""
    p.add_argument(
        "--skip-corrupt-images",
        "--skip_corrupt_images",
        dest="skip_corrupt_images",
        action="store_true",
        help=f"leave out {what} that cannot be read (corrupt, broken symbolic links, over the size cap) and list "
        "them (as train's option does); without it one such image stops the run, naming it",
    )


def reading_options(args: argparse.Namespace) -> dict:
    """How the images are read: the keyword arguments of ``embed_folder`` and ``embed_images`` that the flags
    give."""
    return {
        "align": args.align,
        "num_workers": args.num_workers,
        "progress": not args.no_progress,
        "skip_bad_images": args.skip_corrupt_images,
    }


def report_skipped(index, where: str) -> None:
    """One line on stderr when images were left out (``--skip-corrupt-images``), saying where they are listed."""
    skipped = index.info.get("skipped_images") or []
    if skipped:
        first = skipped[0]["problem"]
        print(f"skipped {len(skipped)} unreadable image(s), listed in {where} (e.g. {first})", file=sys.stderr)
