"""Resumable checkpoints: atomic ``step_N`` folders, ``latest`` resolution, pruning, exact-resume state.

A checkpoint is ``accelerator.save_state`` written into ``checkpoints/.step_N.tmp`` and renamed to
``checkpoints/step_N`` only when every process has finished writing, so a folder named ``step_N`` is always
complete (it also holds ``checkpoint.json``). Only the trainable tensors (adapter branches, head) are stored,
not the frozen base model. Resuming restores them, the optimizer, the LR scheduler, every process's RNG state,
the accumulation counter and the position in the epoch, so a resumed run is bit-identical to an uninterrupted
one on CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import publish_directory, recover_directory

__all__ = [
    "CHECKPOINT_MARKER",
    "CheckpointManager",
    "TrainingProgress",
    "install_trainable_state_hooks",
    "trainable_state_dict",
]

CHECKPOINT_MARKER = "checkpoint.json"
TRAINABLE_STATE_NAME = "trainable_state.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_OLD_STEP_DIR = re.compile(r"^\.(step_\d+)\.old$")


class TrainingProgress:
    """Where training stands: registered with ``accelerator.register_for_checkpointing``.

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
            "last_loss": -1.0 if self.last_loss is None else self.last_loss,
            "metrics_before": json.dumps(self.metrics_before, sort_keys=True),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self.accelerator_step = int(state["accelerator_step"])
        self.loss_sum = float(state["loss_sum"])
        self.loss_count = int(state["loss_count"])
        self.last_loss = None if float(state["last_loss"]) < 0 else float(state["last_loss"])
        self.metrics_before = json.loads(state["metrics_before"])


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint must keep: trainable parameters plus the head's buffers (e.g. AdaFace stats)."""
    state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        state.update({f"head.{name}": b for name, b in head.named_buffers()})
    return state


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda_{i}"] = s
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[f"cuda_{i}"] for i in range(len(state) - 1) if f"cuda_{i}" in state]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def install_trainable_state_hooks(accelerator: Any, model_type: type[nn.Module]) -> dict[str, Any]:
    """Make ``save_state``/``load_state`` store only the trainable tensors of ``model_type`` models, and each
    process's torch RNG state in safetensors (Accelerate's own RNG loading swallows errors silently).

    Returns a dict whose ``"rng_file"`` is set by a load to the file to restore from (see ``restore_rng``).
    """
    loaded: dict[str, Any] = {"rng_file": None}

    def save_hook(models: list[nn.Module], weights: list[dict], output_dir: str) -> None:
        rank = accelerator.process_index
        save_file(_rng_state(), os.path.join(output_dir, f"torch_rng_state_{rank}.safetensors"))
        for i in reversed(range(len(models))):
            unwrapped = accelerator.unwrap_model(models[i])
            if isinstance(unwrapped, model_type):
                if accelerator.is_main_process:
                    tensors = {k: v.detach().cpu().contiguous() for k, v in trainable_state_dict(unwrapped).items()}
                    save_file(tensors, os.path.join(output_dir, TRAINABLE_STATE_NAME))
                if i < len(weights):
                    weights.pop(i)

    def load_hook(models: list[nn.Module], input_dir: str) -> None:
        path = os.path.join(input_dir, TRAINABLE_STATE_NAME)
        for i in reversed(range(len(models))):
            unwrapped = accelerator.unwrap_model(models[i])
            if not isinstance(unwrapped, model_type):
                continue
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{input_dir} is not a petal-peft checkpoint: {TRAINABLE_STATE_NAME} missing.")
            saved = load_file(path)
            expected = trainable_state_dict(unwrapped)
            missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
            if missing or unexpected:
                raise ValueError(
                    f"checkpoint {input_dir} does not match this model (different adapter or head settings?): "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}."
                )
            with torch.no_grad():
                for name, target in expected.items():
                    if saved[name].shape != target.shape:
                        raise ValueError(
                            f"checkpoint {input_dir}: {name} has shape {tuple(saved[name].shape)}, the model "
                            f"{tuple(target.shape)}."
                        )
                    target.copy_(saved[name].to(device=target.device, dtype=target.dtype))
            models.pop(i)
        rng_file = os.path.join(input_dir, f"torch_rng_state_{accelerator.process_index}.safetensors")
        loaded["rng_file"] = rng_file if os.path.isfile(rng_file) else None

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    return loaded


class CheckpointManager:
    """Names, writes, finds and prunes the ``step_N`` checkpoint folders under ``root``."""

    def __init__(self, root: str | os.PathLike, accelerator: Any, total_limit: int = 2) -> None:
        self.root = Path(root)
        self.accelerator = accelerator
        self.total_limit = int(total_limit)

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
        if self.accelerator.is_main_process:
            self._recover()
        self.accelerator.wait_for_everyone()
        found = self.complete_checkpoints()
        return found[-1][1] if found else None

    def resolve(self, spec: str) -> Path | None:
        """``"latest"`` -> newest complete checkpoint (None if there is none yet); else a checkpoint folder."""
        if spec == "latest":
            return self.latest()
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {spec}: no such folder.")
        if not (path / CHECKPOINT_MARKER).is_file():
            raise ValueError(
                f"--resume_from_checkpoint {spec} is not a complete checkpoint ({CHECKPOINT_MARKER} missing); "
                "an interrupted save leaves only a temporary folder, which cannot be resumed."
            )
        return path

    # ---- writing ----------------------------------------------------------------------------------------------
    def save(self, step: int, info: dict[str, Any] | None = None) -> Path:
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
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            marker = {"step": int(step), "format_version": 1, **(info or {})}
            (tmp / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            publish_directory(tmp, final)
            self.prune()
        acc.wait_for_everyone()
        return final

    def prune(self) -> list[Path]:
        """Delete all but the newest ``total_limit`` complete checkpoints (renamed away first, then removed)."""
        removed = []
        for _, path in self.complete_checkpoints()[: -self.total_limit]:
            doomed = path.with_name(f".{path.name}.deleting")
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(path)
        return removed

    def load(self, path: str | os.PathLike, progress: TrainingProgress, rng_holder: dict[str, Any]) -> None:
        """``accelerator.load_state`` plus the exact-resume extras (RNG per process, accumulation counter)."""
        self.accelerator.load_state(str(path))
        rng_file = rng_holder.get("rng_file")
        if rng_file is None:
            raise FileNotFoundError(f"checkpoint {path} lacks torch_rng_state_{self.accelerator.process_index}.")
        _set_rng_state(load_file(rng_file))
        self.accelerator.step = progress.accelerator_step
