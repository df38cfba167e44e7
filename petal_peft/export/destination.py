"""Where an ONNX export goes: never deleting what the export did not write.

An export folder is recognised by its card (``export_card.json`` with our format), which lists every file the
export wrote. The rules, checked before any model is loaded:

* no folder yet, or an empty one: the export is written there;
* a file in its place: refused (an export never replaces a file);
* a previous export of ours: refused unless ``overwrite``; with it, the previous export's files are replaced and
  nothing else in the folder is touched;
* any other non-empty folder: refused unless ``overwrite``; with it, the export's files are added and nothing
  else is touched, and a file of the folder's own that has a name the export writes (``README.md``) is refused.

The export is written into a staging folder first and moved into place when whole, file by file where the
folder already exists (the card last, so it lists what is there).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from petal_peft.files import apply_umask, atomic_directory, make_temp_dir, write_json_atomic
from petal_peft.outputs import OutputPathError, check_writable

from .card import CARD_FORMAT, CARD_NAME

__all__ = ["README_NAME", "check_export_destination", "export_file_names", "export_staging", "previous_export_files"]

README_NAME = "README.md"
_STAGING_PREFIX = ".petal-peft-export."


def export_file_names(parts: Iterable[str]) -> set[str]:
    """Every file an export of ``parts`` may write (graphs, their external-data files, the card, the README)."""
    names = {CARD_NAME, README_NAME}
    for part in parts:
        names |= {f"{part}.onnx", f"{part}.onnx.data"}
    return names


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def previous_export_files(folder: str | os.PathLike) -> set[str] | None:
    """The files a previous export of ours wrote into ``folder`` (None when the folder holds no export card).

    Cards from before the card listed its files: the graphs it names, their ``.data`` files, the card, the README.
    """
    card_path = Path(folder) / CARD_NAME
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        return None
    files = card.get("files")
    if not isinstance(files, list):
        graphs = [entry.get("file") for entry in (card.get("models") or {}).values() if isinstance(entry, dict)]
        files = [CARD_NAME, README_NAME, *graphs, *(f"{g}.data" for g in graphs if isinstance(g, str))]
    return {name for name in files if _plain_name(name)}


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(_STAGING_PREFIX))


def check_export_destination(out: str | os.PathLike, parts: Iterable[str], *, overwrite: bool) -> Path:
    """Refuse an output that the export may not write (see the module docstring); returns it as a Path.

    Args:
        out: the output folder.
        parts: the parts to export (what file names it may write).
        overwrite: whether ``--overwrite`` was given.

    Raises:
        OutputPathError: the refusal, in one line naming the folder and the fix.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"--out {folder} is a file, not a folder; an export never replaces a file.")
    check_writable(folder)
    if not folder.is_dir() or not _entries(folder):
        return folder
    ours = previous_export_files(folder)
    if not overwrite:
        if ours is not None:
            raise OutputPathError(
                f"--out {folder} holds an ONNX export already; pass --overwrite to replace it, or choose a new folder."
            )
        raise OutputPathError(
            f"--out {folder} exists, is not empty and holds no ONNX export ({', '.join(_entries(folder)[:3])}"
            f"{', ...' if len(_entries(folder)) > 3 else ''}); choose a new folder, or pass --overwrite to add the "
            "export to it (nothing else in it is touched)."
        )
    clashes = sorted(name for name in export_file_names(parts) if (folder / name).exists() and name not in (ours or ()))
    if clashes:
        raise OutputPathError(
            f"--out {folder} has files of its own named like the export's ({', '.join(clashes)}); the export would "
            "replace them: choose another folder."
        )
    return folder


def _publish_into(staging: Path, folder: Path) -> None:
    """Move the staged files into an existing folder: the previous export's files replaced, nothing else."""
    old = previous_export_files(folder) or set()
    new = set(os.listdir(staging))
    foreign = sorted(name for name in new if (folder / name).exists() and name not in old)
    if foreign:  # appeared since the check
        raise OutputPathError(f"--out {folder} has files of its own named like the export's ({', '.join(foreign)}).")
    apply_umask(staging)
    card = json.loads((staging / CARD_NAME).read_text(encoding="utf-8"))
    if (folder / CARD_NAME).exists():  # while files move, the card in place covers the old and the new ones
        previous = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
        write_json_atomic(folder / CARD_NAME, {**previous, "files": sorted(old | new)})
    for name in sorted(new - {CARD_NAME}):
        os.replace(staging / name, folder / name)
    for name in sorted(old - new):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    write_json_atomic(folder / CARD_NAME, card)
    apply_umask(folder / CARD_NAME, recursive=False)


@contextlib.contextmanager
def export_staging(out: str | os.PathLike) -> Iterator[Path]:
    """A staging folder for the export; on success its files are moved into ``out`` (see the module docstring).

    ``out`` must have passed :func:`check_export_destination`. A new folder is published whole (one rename);
    into an existing folder the files move one by one, the card last.
    """
    folder = Path(os.path.abspath(out))
    if not folder.is_dir():
        with atomic_directory(folder) as staging:
            yield staging
        return
    staging = make_temp_dir(folder, prefix=_STAGING_PREFIX)
    try:
        yield staging
        _publish_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
