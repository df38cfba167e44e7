"""One rule for every command's output path, checked before any model is loaded or any image is read.

* a file where a folder is wanted (or a folder where a file is wanted), or a file among the parent folders: refused;
* a place that cannot be written (a read-only folder or file system): refused;
* an existing output (a file, or a folder that is not empty): refused unless ``--overwrite``.

Each refusal is an :class:`OutputPathError` (a ValueError), which the CLI prints as one line with exit status 2.
Imports nothing of petal-peft, so any layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputPathError", "check_output_file", "check_output_folder", "check_writable"]


class OutputPathError(ValueError):
    """An output path that cannot or may not be written; the message names the path and the fix."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(os.getcwd())


def check_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """``path`` (or, when it does not exist yet, the folder it would be created in) can be written.

    Raises:
        OutputPathError: a parent is a file, or the nearest existing folder is not writable.
    """
    path = Path(os.path.abspath(path))
    existing = _nearest_existing(path)
    if existing != path and not existing.is_dir():
        raise OutputPathError(f"{flag} {path}: {existing} is a file, not a folder.")
    target = existing if existing.is_dir() else existing.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: {target} is not writable (read-only folder or file system).")


def check_output_folder(
    path: str | os.PathLike, *, overwrite: bool, flag: str = "--out", existing_ok: bool = False
) -> Path:
    """Check an output folder before the work: not a file, writable, and new or empty unless ``overwrite``.

    Args:
        path: the output folder.
        overwrite: whether ``--overwrite`` was given (an existing, non-empty folder is accepted).
        flag: how messages name the option (e.g. ``--out``).
        existing_ok: accept an existing non-empty folder without ``overwrite`` (the caller checks the files it
            will write itself, as ``eval`` does for its report).

    Returns:
        The folder as a Path.

    Raises:
        OutputPathError: when the folder cannot or may not be written.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{flag} {folder} is a file, not a folder; choose a folder.")
    check_writable(folder, flag)
    if folder.is_dir() and not (overwrite or existing_ok) and any(folder.iterdir()):
        raise OutputPathError(
            f"{flag} {folder} exists and is not empty; pass --overwrite to write into it, or choose a new folder."
        )
    return folder


def check_output_file(path: str | os.PathLike, *, overwrite: bool, flag: str = "--out") -> Path:
    """Check an output file before the work: not a folder, writable, and new unless ``overwrite``.

    Args:
        path: the output file.
        overwrite: whether ``--overwrite`` was given (an existing file is replaced).
        flag: how messages name the option.

    Returns:
        The file as a Path.

    Raises:
        OutputPathError: when the file cannot or may not be written.
    """
    file = Path(path)
    if file.is_dir():
        raise OutputPathError(f"{flag} {file} is a folder, not a file; name a file.")
    check_writable(file, flag)
    if (file.exists() or file.is_symlink()) and not overwrite:
        raise OutputPathError(f"{flag} {file} already exists; pass --overwrite to replace it.")
    if file.exists() and not os.access(file, os.W_OK):
        raise OutputPathError(f"{flag} {file} is not writable.")
    return file
