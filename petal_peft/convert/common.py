"""Reading foreign checkpoints safely, checking them against an expected layout, and writing converted folders.

Every converter follows the same steps: read the file with ``torch.load(weights_only=True)`` only (a pickle that
holds anything but tensors and plain containers is refused, never executed), strip DDP's ``module.`` prefix, infer
the architecture from tensor shapes, check every key and shape against that architecture (errors list what is
missing, unexpected or mis-shaped), then write transformers / PEFT folders atomically.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_directory

__all__ = [
    "CheckpointFormatError",
    "ConversionResult",
    "check_layout",
    "lora_alpha_for",
    "parse_dtype",
    "push_converted",
    "read_state_dict",
    "staged_directory",
]

#: state-dict wrappers seen in training checkpoints (the reference's checkpoint_gpu_*.pt, common trainers)
_WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "model", "backbone")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_LIST_LIMIT = 12


class CheckpointFormatError(ValueError):
    """The file is not a checkpoint of the expected kind, or does not match the architecture it implies."""


@dataclass
class ConversionResult:
    """What a conversion wrote.

    ``base_dir``: the backbone as a transformers folder (``AutoModel.from_pretrained(base_dir)`` after
    ``import petal_peft``). ``adapter_dir``: the LoRA weights as a PEFT adapter folder
    (``PeftModel.from_pretrained(base, adapter_dir)``), or None when the checkpoint holds none. ``layout``:
    ``"pretrained"``, ``"lora"`` (single-branch LoRA, written as a plain PEFT LoRA adapter) or ``"quality_gated"``
    (the dual-branch PETALface adapter). ``architecture``: the inferred hyper-parameters.
    """

    base_dir: Path
    adapter_dir: Path | None
    layout: str
    architecture: dict[str, Any]
    source: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return self.base_dir.parent

    def summary(self) -> str:
        arch = ", ".join(f"{k}={v}" for k, v in self.architecture.items())
        lines = [f"converted {self.source} ({self.layout}) in {self.seconds:.1f} s", f"  architecture: {arch}"]
        lines.append(f"  base model: {self.base_dir}")
        lines.append(
            f"  adapter:    {self.adapter_dir}" if self.adapter_dir else "  adapter:    none (no LoRA weights)"
        )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """None (keep the checkpoint's floating dtype), a torch dtype, or one of 'float32', 'float16', 'bfloat16'."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype}.")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    return _DTYPES[dtype]


def _human_size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes} bytes"


def read_state_dict(path: str | os.PathLike, what: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a PyTorch checkpoint, read with ``torch.load(weights_only=True)`` only.

    Accepts a plain state dict or one wrapped under a usual key (``state_dict_backbone``, ``state_dict``,
    ``model``); strips DDP's ``module.`` prefix. ``what`` names the expected kind of file in errors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected {with_article(what)}).")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the {what} file itself (e.g. .../model.pt).")
    if progress:
        print(f"reading {path} ({_human_size(path.stat().st_size)}) with torch.load(weights_only=True)", flush=True)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise _unpickling_error(err, path, what) from None
    except RuntimeError as err:
        if "mmap" not in str(err).lower():
            raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint ({_first_line(err)}).") from None
        loaded = _load_without_mmap(path, what)  # the legacy (non-zip) format cannot be memory-mapped
    except Exception as err:  # noqa: BLE001 - any other failure to parse means "not a checkpoint"
        raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint ({_first_line(err)}).") from None
    return _as_state_dict(loaded, path, what)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def with_article(noun: str) -> str:
    """``noun`` preceded by "a" or "an" ("an insightface ...", "a PETALface ...")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


#: the global torch's weights-only unpickler refused, in its messages of torch 2.4 to 2.13
_REFUSED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)", re.IGNORECASE)


def _unpickling_error(err: pickle.UnpicklingError, path: Path, what: str) -> CheckpointFormatError:
    """torch's weights-only unpickler stopped: either at a global it will not import (code), or at garbage.

    torch's own advice ("re-running with weights_only=False will likely succeed") is left out on purpose: for a
    file that names code to run, that is exactly what must not be done."""
    text = str(err)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return CheckpointFormatError(
            f"{path}: refused to load: the pickle names `{refused.group(1)}`, code that would run if it were "
            f"unpickled; {with_article(what)} is a plain state dict of tensors. The file was not executed."
        )
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    detail = lines[0] if lines else type(err).__name__
    return CheckpointFormatError(f"{path} is not a PyTorch checkpoint (unreadable pickle: {detail}).")


def _load_without_mmap(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unpickling_error(err, path, what) from None
    except Exception as err:  # noqa: BLE001
        raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint ({_first_line(err)}).") from None


def _as_state_dict(loaded: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointFormatError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (name -> tensor); expected {with_article(what)}."
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(
                f"{path}: state-dict key {key!r} is not a string; expected {with_article(what)}."
            )
        if not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected {with_article(what)} "
                "(a plain state dict)."
            )
        state[key] = value
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" ... ({len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else "")


def check_layout(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    ignorable: Iterable[str] = (),
    source: str = "checkpoint",
    architecture: str = "",
) -> None:
    """Raise one :class:`CheckpointFormatError` naming every missing key, unexpected key and shape mismatch.

    ``expected`` maps each key the architecture needs to its shape; ``ignorable`` keys may be present or not
    (buffers the converted model recomputes, training-only parameters).
    """
    ignorable = set(ignorable)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - ignorable)
    mismatched = [
        f"{key}: {tuple(state[key].shape)} (expected {tuple(shape)})"
        for key, shape in sorted(expected.items())
        if key in state and tuple(state[key].shape) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys [{_listed(missing)}]")
    if unexpected:
        problems.append(f"unexpected keys [{_listed(unexpected)}]")
    if mismatched:
        problems.append(f"shape mismatches [{_listed(mismatched)}]")
    if problems:
        arch = f" for the architecture its shapes imply ({architecture})" if architecture else ""
        raise CheckpointFormatError(f"{source} does not match{arch}: " + "; ".join(problems) + ".")
    for key, tensor in state.items():
        if key in expected and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointFormatError(f"{source}: tensor {key!r} contains NaN or infinite values.")


def lora_alpha_for(scale: float, rank: int) -> float | int:
    """PEFT's ``lora_alpha`` for a branch scale ``scale`` (PEFT scales by lora_alpha / r); an int when exact."""
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"lora_scale must be a finite positive number, got {scale}.")
    alpha = scale * rank
    return int(alpha) if float(alpha).is_integer() else alpha


@contextmanager
def staged_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; on success it replaces ``final`` in one rename
    (:func:`petal_peft.files.atomic_directory`, which honours the umask).

    Refuses to replace an existing non-empty ``final`` unless ``overwrite``.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder.")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{final} exists and is not empty; choose another output folder or pass overwrite.")
    with atomic_directory(final) as staging:
        yield staging


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def push_converted(result: ConversionResult, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a conversion to the Hub: the base model at the repo root, the adapter (if any) under ``adapter/``.

    Then ``AutoModel.from_pretrained(repo_id)`` and ``PeftModel.from_pretrained(base, repo_id,
    subfolder="adapter")`` load it (after ``import petal_peft``). Returns the last commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(result.base_dir),
        repo_type="model",
        commit_message=f"Upload {result.architecture.get('model_type', 'model')} converted by petal-peft",
    )
    if result.adapter_dir is not None:
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(result.adapter_dir),
            path_in_repo="adapter",
            repo_type="model",
            commit_message="Upload the converted adapter",
        )
    return str(getattr(info, "commit_url", info))
