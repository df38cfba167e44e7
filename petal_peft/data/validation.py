"""Fail before training, with a message that names the file and the problem.

Checks, cheapest first: labels (empty dataset, a single identity, labels out of range); every image's header
with PIL ``verify()`` plus an end-of-file marker check for JPEG/PNG (``verify`` reads only the header of a
JPEG, so a file cut short passes it; a missing EOI/IEND marker catches that cheaply); and a full decode of
``decode_limit`` evenly spaced images (all of them when ``decode_limit`` is None).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from petal_peft.data.base import open_rgb
from petal_peft.data.errors import DataValidationError
from petal_peft.images import size_problem

__all__ = ["check_image_file", "find_unusable_images", "validate_face_dataset", "validate_labels"]

_MAX_LISTED = 10
_TAIL_BYTES = 4096  # JPEG writers may pad after EOI; look for the marker near the end, not at the last byte


def _read_tail(source: str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[-_TAIL_BYTES:]
    with open(source, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _TAIL_BYTES))
        return fh.read()


def check_image_file(name: str, source: str | bytes) -> str | None:
    """Cheap integrity check of one encoded image; returns a problem description or None if it looks fine."""
    try:
        if not isinstance(source, bytes) and os.path.getsize(source) == 0:
            return "empty file (0 bytes)"
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # size_problem applies our cap
            img = Image.open(fp)
        with img:
            fmt = img.format
            too_large = size_problem(img)
            if too_large:
                return too_large
            img.verify()
    except Image.DecompressionBombError as exc:
        return f"image too large, a decompression bomb ({exc})"
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt or truncated image ({exc})"
    tail = _read_tail(source)
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "PNG" and b"IEND" not in tail[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def _raise_problems(what: str, problems: list[str], total: int) -> None:
    if not problems:
        return
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DataValidationError(f"{len(problems)} of {total} images in {what} are unusable:\n  {listed}{more}")


def validate_labels(
    labels: list[int], num_classes: int, what: str, *, allow_ignore: bool = False, min_identities: int = 2
) -> None:
    """Empty dataset, too few identities, negative or out-of-range labels."""
    if len(labels) == 0:
        raise DataValidationError(f"{what} is empty: no images found.")
    ids = {int(label) for label in labels}
    ignored = -100 in ids and allow_ignore
    bad = sorted(i for i in ids if (i < 0 and not (allow_ignore and i == -100)) or i >= num_classes)
    if bad:
        raise DataValidationError(f"{what}: labels must be integers in [0, {num_classes}), found {bad[:_MAX_LISTED]}.")
    n_ids = len(ids) - (1 if ignored else 0)
    if n_ids < min_identities:
        raise DataValidationError(
            f"{what} has {n_ids} identit{'y' if n_ids == 1 else 'ies'}; training a face-recognition head "
            f"needs at least {min_identities} (a margin softmax over one class learns nothing)."
        )


def _sample_indices(n: int, limit: int | None) -> list[int]:
    if limit is None or n <= limit:
        return list(range(n))
    if limit <= 0:
        return []
    step = n / limit
    return sorted({int(i * step) for i in range(limit)})


def find_unusable_images(
    ds: Any, decode_limit: int | None = 256, *, progress: bool | None = None
) -> list[tuple[int, str]]:
    """``(index, "name: problem")`` of every image that fails the checks of :func:`validate_face_dataset`
    (header and end marker of all images, a full decode of ``decode_limit`` of the others), in index order."""
    n = len(ds)
    what = getattr(ds, "description", None) or type(ds).__name__
    if progress is None:
        progress = n > 2000
    problems: dict[int, str] = {}
    for i in tqdm(range(n), desc=f"checking images ({what})", disable=not progress, leave=False):
        name, source = ds.image_source(i)
        problem = check_image_file(name, source)
        if problem:
            problems[i] = f"{name}: {problem}"
    for i in _sample_indices(n, decode_limit):
        if i in problems:
            continue
        name, source = ds.image_source(i)
        try:
            open_rgb(source, name)
        except DataValidationError as exc:
            problems[i] = str(exc)
    return sorted(problems.items())


def validate_face_dataset(
    ds: Any,
    check_images: bool = True,
    decode_limit: int | None = 256,
    *,
    min_identities: int = 2,
    allow_ignore: bool = False,
    progress: bool | None = None,
) -> None:
    """Validate a FaceDataset (labels, then images); raise DataValidationError naming each problem.

    ``ds`` needs ``labels``, ``num_classes`` and (for ``check_images``) ``image_source(index)``. The header
    and end-marker pass covers every image; ``decode_limit`` images get a full decode (None: all).
    """
    what = getattr(ds, "description", None) or type(ds).__name__
    validate_labels(
        list(ds.labels), int(ds.num_classes), what, allow_ignore=allow_ignore, min_identities=min_identities
    )
    if not check_images:
        return
    problems = find_unusable_images(ds, decode_limit, progress=progress)
    _raise_problems(what, [message for _, message in problems], len(ds))
