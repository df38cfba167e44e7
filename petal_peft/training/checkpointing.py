"""Resumable checkpoints: atomic ``step_N`` folders, ``latest`` resolution, pruning, exact-resume state.

A checkpoint is written into ``checkpoints/.step_N.tmp`` and renamed to ``checkpoints/step_N`` only when every
process has finished writing, so a folder named ``step_N`` is always complete (``checkpoint.json`` is written
last). It holds only the trainable tensors (adapter branches, head), not the frozen base model, plus the
optimizer, the LR scheduler (and fp16 loss scaler), the position in the data, every process's RNG states and
the record of the run that wrote it (its flags, data and base model), so a resumed run is bit-identical to an
uninterrupted one on CPU and a different run cannot resume it by mistake.

Nothing is pickled: tensors go to safetensors, everything else to JSON (see :mod:`.checkpoint_format`). A
checkpoint holding a pickle-like file is refused unread; a damaged one (missing, truncated or unreadable file)
is skipped by ``latest`` with a warning naming it, and is an error when named explicitly.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..files import publish_directory, recover_directory
from .checkpoint_format import (
    CheckpointError,
    DamagedCheckpointError,
    UnsafeCheckpointError,
    check_rng_file,
    flatten_state,
    load_state_file,
    load_tensors,
    read_json,
    refuse_pickles,
    restore_rng_state,
    rng_state,
    save_state_file,
    unflatten_state,
    write_json,
)

__all__ = [
    "CHECKPOINT_MARKER",
    "CheckpointError",
    "CheckpointManager",
    "DamagedCheckpointError",
    "LoadedCheckpoint",
    "TrainingProgress",
    "TrainingState",
    "UnsafeCheckpointError",
    "trainable_state_dict",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
CHECKPOINT_MARKER = "checkpoint.json"
RUN_RECORD_NAME = "run.json"
TRAINABLE_STATE_NAME = "trainable_state.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
SCHEDULER_NAME = "scheduler.json"
SCALER_NAME = "scaler.json"
PROGRESS_NAME = "progress.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_OLD_STEP_DIR = re.compile(r"^\.(step_\d+)\.old$")


def rng_file_name(rank: int) -> str:
    return f"rng_state_{int(rank)}.safetensors"


class TrainingProgress:
    """Where training stands.

    ``batches_in_epoch`` counts micro-batches of the current epoch already consumed, so a resumed run skips
    exactly those. The loss window and the metrics measured before training travel too, so the logs of a
    resumed run match those of an uninterrupted one.
    """

    def __init__(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.accelerator_step = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.last_loss: float | None = None
        self.metrics_before: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "accelerator_step": self.accelerator_step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "last_loss": self.last_loss,
            "metrics_before": self.metrics_before,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self.accelerator_step = int(state["accelerator_step"])
        self.loss_sum = float(state["loss_sum"])
        self.loss_count = int(state["loss_count"])
        self.last_loss = None if state["last_loss"] is None else float(state["last_loss"])
        self.metrics_before = dict(state["metrics_before"])


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint must keep: trainable parameters plus the head's buffers (e.g. AdaFace stats)."""
    state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        state.update({f"head.{name}": b for name, b in head.named_buffers()})
    return state


@dataclass
class TrainingState:
    """What a checkpoint saves and a resume restores (the model unwrapped, the optimizer not Accelerate's)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    progress: TrainingProgress
    scaler: Any | None = None


@dataclass
class LoadedCheckpoint:
    """A checkpoint read fully into memory (so that a damaged file is found before anything is changed)."""

    path: Path
    marker: dict[str, Any]
    run_record: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: Any
    scheduler: Any
    progress: dict[str, Any]
    scaler: Any | None
    rng: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None

    @property
    def step(self) -> int:
        return int(self.marker["step"])


def read_checkpoint(path: str | os.PathLike, rank: int | None = 0) -> LoadedCheckpoint:
    """Read and check every file of checkpoint ``path`` (``rank``: whose RNG state to keep; None: none).

    Raises :class:`UnsafeCheckpointError` for a pickle-like file (unread), :class:`DamagedCheckpointError` for
    a missing, truncated or unreadable file, :class:`CheckpointError` for a checkpoint of another format.
    """
    path = Path(path)
    refuse_pickles(path)
    marker = read_json(path / CHECKPOINT_MARKER)
    if not isinstance(marker, dict) or "step" not in marker:
        raise DamagedCheckpointError(f"{path / CHECKPOINT_MARKER}: no step recorded")
    if marker.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {marker.get('format_version')!r}; this petal-peft reads version "
            f"{FORMAT_VERSION} (it cannot resume checkpoints of other versions: start a new run)."
        )
    run_record = read_json(path / RUN_RECORD_NAME)
    trainable, _ = load_tensors(path / TRAINABLE_STATE_NAME)
    optimizer = load_state_file(path / OPTIMIZER_NAME)
    scheduler = _unflatten_json(read_json(path / SCHEDULER_NAME), path / SCHEDULER_NAME)
    progress = read_json(path / PROGRESS_NAME)
    missing = [k for k in TrainingProgress().state_dict() if not isinstance(progress, dict) or k not in progress]
    if missing:
        raise DamagedCheckpointError(f"{path / PROGRESS_NAME}: missing {missing}")
    scaler = read_json(path / SCALER_NAME) if marker.get("has_scaler") else None
    rng = None
    for other in range(int(marker.get("num_processes", 1))):
        rng_path = path / rng_file_name(other)
        tensors, metadata = load_tensors(rng_path)
        check_rng_file(tensors, metadata, rng_path)
        if other == rank:
            rng = (tensors, metadata)
    # (a process the checkpoint has no state for gets none: the run comparison refuses another process count,
    # alike on every process, so that all of them take the same decision)
    return LoadedCheckpoint(path, marker, run_record, trainable, optimizer, scheduler, progress, scaler, rng)


def _unflatten_json(structure: Any, path: Path) -> Any:
    try:
        return unflatten_state(structure, {})
    except ValueError as err:
        raise DamagedCheckpointError(f"{path}: {err}") from None


class CheckpointManager:
    """Names, writes, finds, checks and prunes the ``step_N`` checkpoint folders under ``root``.

    ``run_record`` (JSON-able: the flags and identity of the run) is stored in every checkpoint as ``run.json``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        accelerator: Any,
        total_limit: int = 2,
        run_record: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.accelerator = accelerator
        self.total_limit = int(total_limit)
        self.run_record = run_record if run_record is not None else {}  # filled in as the run learns more

    @property
    def _rank(self) -> int:
        return int(getattr(self.accelerator, "process_index", 0))

    # ---- finding ----------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Bring back a checkpoint whose replacement was interrupted between its two renames."""
        if not self.root.is_dir():
            return
        for entry in os.listdir(self.root):
            match = _OLD_STEP_DIR.match(entry)
            if match:
                recover_directory(self.root / match.group(1))

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every complete checkpoint, oldest first; temporary and partial folders ignored."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.listdir(self.root):
            match = _STEP_DIR.match(entry)
            path = self.root / entry
            if match and path.is_dir() and (path / CHECKPOINT_MARKER).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder (not checked; see :meth:`latest_good`)."""
        if self.accelerator.is_main_process:
            self._recover()
        self.accelerator.wait_for_everyone()
        found = self.complete_checkpoints()
        return found[-1][1] if found else None

    def latest_good(self) -> LoadedCheckpoint | None:
        """The newest checkpoint that reads back whole; damaged ones are skipped with a warning naming them.

        A pickle-like file is not damage: it raises :class:`UnsafeCheckpointError` (every process decides
        alike, as they read the same files).
        """
        if self.accelerator.is_main_process:
            self._recover()
        self.accelerator.wait_for_everyone()
        for _, path in reversed(self.complete_checkpoints()):
            try:
                return read_checkpoint(path, self._rank)
            except UnsafeCheckpointError:
                raise
            except CheckpointError as err:
                if self.accelerator.is_main_process:
                    logger.warning("skipping damaged checkpoint %s: %s", path, err)
                    print(f"Warning: skipping damaged checkpoint {path} ({err}); trying the previous one.")
        return None

    def resolve(self, spec: str) -> LoadedCheckpoint | None:
        """``"latest"`` -> newest good checkpoint (None if there is none); else that folder, which must be good."""
        if spec == "latest":
            return self.latest_good()
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {spec}: no such folder.")
        if not (path / CHECKPOINT_MARKER).is_file():
            raise CheckpointError(
                f"--resume_from_checkpoint {spec} is not a complete checkpoint ({CHECKPOINT_MARKER} missing); "
                "an interrupted save leaves only a temporary folder, which cannot be resumed."
            )
        try:
            return read_checkpoint(path, self._rank)
        except DamagedCheckpointError as err:
            raise DamagedCheckpointError(
                f"--resume_from_checkpoint {spec} is damaged: {err}. Name an older checkpoint, or pass latest "
                "to take the newest good one."
            ) from None

    # ---- writing ----------------------------------------------------------------------------------------------
    def save(self, step: int, state: TrainingState, info: dict[str, Any] | None = None) -> Path:
        """Write checkpoint ``step_<step>`` atomically (all processes must call this)."""
        acc = self.accelerator
        name = f"step_{int(step)}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"  # same name on every process
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        acc.wait_for_everyone()
        tensors, metadata = rng_state()
        save_file(tensors, str(tmp / rng_file_name(self._rank)), metadata=metadata)
        if acc.is_main_process:
            self._write_main_files(tmp, state)
        acc.wait_for_everyone()
        if acc.is_main_process:
            marker = {
                "step": int(step),
                "format_version": FORMAT_VERSION,
                "num_processes": int(getattr(acc, "num_processes", 1)),
                "has_scaler": state.scaler is not None,
                **(info or {}),
            }
            write_json(tmp / CHECKPOINT_MARKER, marker)
            publish_directory(tmp, final)
            self.prune()
        acc.wait_for_everyone()
        return final

    def _write_main_files(self, folder: Path, state: TrainingState) -> None:
        write_json(folder / RUN_RECORD_NAME, self.run_record)
        tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_state_dict(state.model).items()}
        save_file(tensors, str(folder / TRAINABLE_STATE_NAME))
        save_state_file(folder / OPTIMIZER_NAME, state.optimizer.state_dict())
        write_json(folder / SCHEDULER_NAME, _json_only(state.scheduler.state_dict(), "scheduler"))
        write_json(folder / PROGRESS_NAME, state.progress.state_dict())
        if state.scaler is not None:
            write_json(folder / SCALER_NAME, _json_only(state.scaler.state_dict(), "loss scaler"))

    def prune(self) -> list[Path]:
        """Delete all but the newest ``total_limit`` complete checkpoints (renamed away first, then removed)."""
        removed = []
        for _, path in self.complete_checkpoints()[: -self.total_limit]:
            doomed = path.with_name(f".{path.name}.deleting")
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(path)
        return removed

    # ---- restoring --------------------------------------------------------------------------------------------
    def load(self, loaded: LoadedCheckpoint, state: TrainingState) -> None:
        """Restore ``state`` from a checkpoint read by :meth:`resolve` (shapes checked before anything changes)."""
        path = loaded.path
        expected = trainable_state_dict(state.model)
        saved = loaded.trainable
        missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not match this model (different adapter or head settings?): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
        for name, target in expected.items():
            if saved[name].shape != target.shape:
                raise CheckpointError(
                    f"checkpoint {path}: {name} has shape {tuple(saved[name].shape)}, the model {tuple(target.shape)}."
                )
        with torch.no_grad():
            for name, target in expected.items():
                target.copy_(saved[name].to(device=target.device, dtype=target.dtype))
        try:
            state.optimizer.load_state_dict(loaded.optimizer)
            state.scheduler.load_state_dict(loaded.scheduler)
            if state.scaler is not None and loaded.scaler is not None:
                state.scaler.load_state_dict(loaded.scaler)
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"checkpoint {path}: optimizer or scheduler state does not fit ({err}).") from None
        state.progress.load_state_dict(loaded.progress)
        if loaded.rng is not None:
            restore_rng_state(*loaded.rng)
        self.accelerator.step = state.progress.accelerator_step


def _json_only(state: Any, what: str) -> Any:
    structure, tensors = flatten_state(state)
    if tensors:
        raise TypeError(f"the {what} state holds tensors ({sorted(tensors)[:3]}); expected numbers only.")
    return structure
