"""Keeping runs apart: one run per output folder at a time, no silent reuse of another run's folder, and no
resume with flags, data or a base model other than those the checkpoint was written with.

* :func:`output_dir_lock` holds an exclusive ``flock`` on ``output_dir/.petal-peft.lock`` for the whole run
  (the main process only, so the processes of one run never block each other); the kernel drops it when the
  process ends, crash or SIGKILL included, so a stale lock file never blocks a later run.
* :func:`check_output_dir` refuses a fresh run into a folder that holds another run's checkpoints or
  adapter unless ``--overwrite_output_dir`` (or ``--resume_from_checkpoint``) says what to do with it, and
  into a folder holding anything a run does not write (:mod:`.run_folder`), whatever the flags.
* :func:`compare_run_records` refuses a resume whose run-defining flags differ from the checkpoint's, listing
  every difference; :data:`RESUMABLE_FIELDS` may change.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .checkpoint_format import CheckpointError
from .run_folder import LOCK_NAME, clear_previous_run, describe_foreign, foreign_entries

__all__ = [
    "LOCK_NAME",
    "RESUMABLE_FIELDS",
    "OutputDirError",
    "RunMismatchError",
    "check_output_dir",
    "compare_run_records",
    "data_fingerprint",
    "output_dir_lock",
]

#: Flags that may differ between a checkpoint and the run resuming it: where things go, what is shown, how
#: often it is evaluated or saved, and how fast data is read. None of them changes the trained weights:
#: evaluation runs with the RNG state saved and restored, and the data order and augmentations depend on
#: (seed, image, epoch) only. ``train_data`` and ``base_model`` may name a new place, provided the data and
#: the base weights found there are the same (their fingerprints are compared instead of the strings).
RESUMABLE_FIELDS = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "logging_steps",
        "report_to",
        "progress_bar",
        "eval_data",
        "eval_steps",
        "eval_batch_size",
        "eval_before_training",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "dataloader_num_workers",
        "use_cpu",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "train_data",
        "base_model",
        "skip_corrupt_images",
    }
)

#: how a run ends that wants to train longer than its checkpoint's schedule
_LONGER_HINT = (
    "max_steps and num_train_epochs fix the learning-rate schedule (warmup, then linear decay to 0 at the last "
    "step), so a run cannot be lengthened on resume: to train longer, start a new run with the longer schedule "
    "(a new --output_dir, or --overwrite_output_dir)"
)


class OutputDirError(ValueError):
    """The output folder is a file, in use by another run, or holds another run."""


class RunMismatchError(CheckpointError):
    """A resume whose flags, data or base model differ from the checkpoint's."""


# ---- the lock -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike, enabled: bool = True) -> Iterator[Path | None]:
    """Hold an exclusive lock on ``output_dir`` (created if needed); a second holder fails at once."""
    if not enabled:
        yield None
        return
    import fcntl

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputDirError(
                f"--output_dir {folder} is in use by another training run (process {holder}, lock {path}); two "
                "runs into one folder would mix their checkpoints. Wait for it to finish or choose another "
                "--output_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it could race with a waiting run)


# ---- the folder ---------------------------------------------------------------------------------------------
def check_output_dir_path(output_dir: str | os.PathLike, *, fresh: bool = False) -> None:
    """An output folder that exists must be a folder we can write (cheap; before anything is loaded); for a
    ``fresh`` run (no resume asked for) it must also hold nothing but a run's own files."""
    folder = Path(output_dir)
    if fresh:
        refuse_foreign_folder(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"--output_dir {folder} is a file, not a folder.")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputDirError(f"--output_dir {folder}: {existing} is a file, not a folder.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output_dir {folder}: {existing} is not writable.")


def refuse_foreign_folder(output_dir: str | os.PathLike) -> None:
    """Refuse a folder that holds anything a training run does not write, with or without --overwrite_output_dir."""
    found = foreign_entries(output_dir)
    if found:
        raise OutputDirError(
            f"--output_dir {output_dir} holds files a petal-peft training run never writes ({describe_foreign(found)})"
            ", so it is not a run folder and nothing in it may be replaced, with or without --overwrite_output_dir: "
            "choose a new or empty --output_dir."
        )


def previous_run_parts(output_dir: str | os.PathLike) -> list[str]:
    """What of another run ``output_dir`` holds: checkpoint folders and the final adapter."""
    folder = Path(output_dir)
    found = []
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir():
        steps = sorted(p.name for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith("step_"))
        if steps:
            found.append("checkpoints " + ", ".join(steps[:4]) + (" ..." if len(steps) > 4 else ""))
    if (folder / "adapter").exists():
        found.append("adapter/")
    return found


def check_output_dir(output_dir: str | os.PathLike, *, resuming: bool, overwrite: bool, clear: bool) -> None:
    """Refuse a fresh run into a folder that holds another run; with ``overwrite`` (and ``clear``, on the main
    process) delete that run's checkpoints/ and logs/. Its adapter/ is kept until the new one replaces it."""
    folder = Path(output_dir)
    if resuming:
        return
    refuse_foreign_folder(folder)
    parts = previous_run_parts(folder)
    if not parts:
        return
    if not overwrite:
        raise OutputDirError(
            f"--output_dir {folder} already holds a training run ({'; '.join(parts)}). Pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or choose "
            "another --output_dir."
        )
    if clear:  # everything in checkpoints/ and logs/ is a run's own (refuse_foreign_folder above)
        clear_previous_run(folder)


# ---- run records --------------------------------------------------------------------------------------------
def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """Size, identities and a hash of the labels (and of the file names relative to the data root, when the
    dataset has them): the same data at a new path matches, other data does not."""
    digest = hashlib.sha256()
    labels = [int(v) for v in dataset.labels]
    digest.update(",".join(map(str, labels)).encode())
    root, paths = getattr(dataset, "root", None), getattr(dataset, "paths", None)
    if root is not None and paths is not None:
        indices = getattr(dataset, "indices", None) or range(len(paths))
        for i in indices:
            digest.update(os.path.relpath(paths[i], root).encode() + b"\0")
    return {"num_images": len(labels), "num_identities": int(dataset.num_classes), "sha256": digest.hexdigest()}


def _fmt(value: Any) -> str:
    return "unset" if value is None else repr(value)


def compare_run_records(saved: dict[str, Any], current: dict[str, Any], checkpoint: str | os.PathLike) -> None:
    """Raise :class:`RunMismatchError` listing every run-defining difference between ``saved`` (the
    checkpoint's record) and ``current``; only the keys present in ``current`` are compared."""
    differences = []
    old_config, new_config = saved.get("training_config", {}), current.get("training_config", {})
    for name in sorted(new_config):
        if name in RESUMABLE_FIELDS:
            continue
        old, new = old_config.get(name, new_config[name]), new_config[name]
        if isinstance(old, list) and isinstance(new, tuple):
            new = list(new)
        if old != new:
            differences.append(f"--{name}: {_fmt(old)} in the checkpoint, {_fmt(new)} now")
    if "num_processes" in current and saved.get("num_processes", current["num_processes"]) != current["num_processes"]:
        differences.append(
            f"processes: {saved['num_processes']} in the checkpoint, {current['num_processes']} now (each process "
            "has its own batches and random numbers)"
        )
    if "train_data" in current and saved.get("train_data") and saved["train_data"] != current["train_data"]:
        old, new = saved["train_data"], current["train_data"]
        differences.append(
            f"training data: {old['num_images']} images of {old['num_identities']} identities in the checkpoint, "
            f"{new['num_images']} of {new['num_identities']} now"
            + (" (same counts, other images or labels)" if old["num_images"] == new["num_images"] else "")
        )
    if "base_model" in current and saved.get("base_model") and saved["base_model"] != current["base_model"]:
        differences.append("base model: other weights than the checkpoint's run was trained on")
    if differences:
        longer = any(d.startswith(("--max_steps", "--num_train_epochs")) for d in differences)
        raise RunMismatchError(
            f"cannot resume from {checkpoint}: it was written by a run with other settings:\n  - "
            + "\n  - ".join(differences)
            + "\nResume with the checkpoint's settings, or start a new run (a new --output_dir, or "
            "--overwrite_output_dir)." + (f"\nNote: {_LONGER_HINT}." if longer else "")
        )
