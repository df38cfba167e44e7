"""What a training run writes into its ``output_dir``, so that nothing else there is ever replaced or deleted.

A run writes only these names: the lock file, ``checkpoints/step_N/`` (staged as ``.step_N.tmp``),
``logs/`` (TensorBoard event files and ``hparams.yml``), ``adapter/`` (staged next to it) and
``skipped_images.txt``. A folder holding anything else (someone's ``checkpoints/best.ckpt``, ``logs/app.log``,
``notes.txt``) is not a run folder: a fresh run into it is refused, with or without ``--overwrite_output_dir``,
naming what it found, and ``--overwrite_output_dir`` deletes only a previous run's ``checkpoints/`` and
``logs/`` after this check found nothing foreign in them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

__all__ = ["LOCK_NAME", "RUN_ENTRIES", "clear_previous_run", "describe_foreign", "foreign_entries"]

LOCK_NAME = ".petal-peft.lock"
#: the top-level names a run writes
RUN_ENTRIES = (LOCK_NAME, "checkpoints", "logs", "adapter", "skipped_images.txt")
#: staging and deletion names next to them (atomic saves, interrupted deletions)
_HIDDEN_RUN_ENTRY = re.compile(r"^\.(adapter\.old|adapter\..+\.tmp|checkpoints\.deleting|logs\.deleting)$")
_CHECKPOINT_ENTRY = re.compile(r"^(step_\d+|\.step_\d+\.(tmp|old|deleting))$")
_LOG_FILE = re.compile(r"^(events\.out\.tfevents\..+|hparams\.yml)$")
_MAX_NAMED = 3


def _foreign_in_logs(logs: Path, root: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(logs):
        found += [os.path.relpath(os.path.join(dirpath, n), root) for n in sorted(filenames) if not _LOG_FILE.match(n)]
    return found


def foreign_entries(output_dir: str | os.PathLike) -> list[str]:
    """Paths (relative to ``output_dir``) that no training run of ours writes; empty for a run folder.

    Args:
        output_dir: the folder to look at (a missing folder has nothing foreign).

    Returns:
        The foreign paths, sorted.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if _HIDDEN_RUN_ENTRY.match(name):
            continue
        if name not in RUN_ENTRIES:
            found.append(name)
        elif name == "checkpoints" and entry.is_dir():
            found += [f"checkpoints/{c.name}" for c in sorted(entry.iterdir()) if not _CHECKPOINT_ENTRY.match(c.name)]
        elif name == "logs" and entry.is_dir():
            found += _foreign_in_logs(entry, folder)
        elif name in ("checkpoints", "logs", "adapter") and not entry.is_dir():
            found.append(name)
    return found


def describe_foreign(found: list[str]) -> str:
    """The first few foreign paths, for a one-line message."""
    return ", ".join(found[:_MAX_NAMED]) + (f" and {len(found) - _MAX_NAMED} more" if len(found) > _MAX_NAMED else "")


def clear_previous_run(output_dir: str | os.PathLike) -> None:
    """Delete a previous run's ``checkpoints/`` and ``logs/`` (the caller checked that they hold nothing else)."""
    folder = Path(output_dir)
    for name in ("checkpoints", "logs"):
        if (folder / name).is_dir():
            doomed = folder / f".{name}.deleting"
            shutil.rmtree(doomed, ignore_errors=True)
            os.replace(folder / name, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
