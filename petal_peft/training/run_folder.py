"""What a training run writes into its ``output_dir``, so that nothing else there is ever replaced or deleted.

A run writes only these names: the lock file, ``checkpoints/step_N/`` (staged as ``.step_N.tmp``),
``logs/`` (TensorBoard event files and ``hparams.yml``), ``adapter/`` (with its ``training_config.json``; staged
next to it) and ``skipped_images.txt``. A fresh run is refused, with or without ``--overwrite_output_dir``,
naming what it found, when the folder

* holds anything else where a run writes (someone's ``checkpoints/best.ckpt``, ``logs/app.log``, an
  ``adapter/`` that train did not write), or
* is not empty and shows no sign of a run at all (someone's folder).

Other files next to a run's own (a user's ``notes.txt`` in a run folder) are left alone. ``--overwrite_output_dir``
deletes only a previous run's ``checkpoints/`` and ``logs/``, after this check found nothing foreign in them.
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


def _has_run_trace(folder: Path) -> bool:
    """Whether a training run of ours has been here: its lock file, a checkpoint, its adapter or its logs."""
    checkpoints, logs = folder / "checkpoints", folder / "logs"
    return (
        (folder / LOCK_NAME).exists()
        or (folder / "adapter" / "training_config.json").is_file()
        or (checkpoints.is_dir() and any(_CHECKPOINT_ENTRY.match(p.name) for p in checkpoints.iterdir()))
        or (logs.is_dir() and any(_LOG_FILE.match(n) for _, _, names in os.walk(logs) for n in names))
    )


def foreign_entries(output_dir: str | os.PathLike) -> list[str]:
    """What in ``output_dir`` stops a fresh run (see the module docstring); empty when the run may go there.

    Args:
        output_dir: the folder to look at (a missing folder has nothing foreign).

    Returns:
        The foreign paths (relative to ``output_dir``), sorted.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    ours = _has_run_trace(folder)
    found: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if _HIDDEN_RUN_ENTRY.match(name):
            continue
        if name not in RUN_ENTRIES:
            if not ours:
                found.append(name)
        elif name == "adapter" and entry.is_dir() and not (entry / "training_config.json").is_file():
            found.append("adapter/ (not written by petal-peft train)")
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
