"""What a training checkpoint holds on disk: safetensors for tensors, JSON for everything else, and no pickles.

Reading a pickle can run any code its author chose, so a checkpoint (a folder anyone could have edited or
planted) is never unpickled: nested states such as the optimizer's are split into their tensors (one
safetensors file) and a JSON description of the structure around them (stored in that file's metadata), and
any file that looks like a pickle (by its name or its first bytes) makes the whole checkpoint refused unread.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import write_json_atomic

__all__ = [
    "CheckpointError",
    "DamagedCheckpointError",
    "UnsafeCheckpointError",
    "flatten_state",
    "load_state_file",
    "pickle_like_files",
    "read_json",
    "refuse_pickles",
    "restore_rng_state",
    "rng_state",
    "save_state_file",
    "unflatten_state",
    "write_json",
]

#: file names that hold pickles in the formats of torch, Accelerate and pickle itself
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")
_STRUCTURE_KEY = "petal_peft_structure"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the folder and the problem."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint with a missing, truncated or unreadable file (an interrupted copy, a full disk)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding a pickle: refused without reading it."""


# ---- pickles ------------------------------------------------------------------------------------------------
def _looks_pickled(path: Path) -> bool:
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    # pickle protocol 2+ starts with PROTO (0x80) and the protocol number; torch.save writes a zip of pickles
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def pickle_like_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under ``folder`` whose name or first bytes say "pickle" (or torch.save archive)."""
    folder = Path(folder)
    found = []
    for dirpath, _, filenames in os.walk(folder):
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and _looks_pickled(path):
                found.append(path)
    return sorted(found)


def refuse_pickles(folder: str | os.PathLike, what: str = "checkpoint") -> None:
    """Raise :class:`UnsafeCheckpointError` naming every pickle-like file in ``folder`` (none is read)."""
    found = pickle_like_files(folder)
    if found:
        names = ", ".join(str(p.relative_to(folder)) for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise UnsafeCheckpointError(
            f"{what} {folder} holds pickle file(s) ({names}); petal-peft never unpickles files it reads (a pickle "
            "can run any code), and its own checkpoints hold none. Refused without reading them: delete the "
            f"file(s) if you trust and no longer need them, or the whole {what}."
        )


# ---- nested states <-> (JSON structure, tensors) -----------------------------------------------------------
def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, numbers, strings, tensors) into a JSON-able structure in
    which each tensor is replaced by ``{"__tensor__": name}``, and the tensors by name."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            name = path or "tensor"
            if name in tensors:  # keys with dots can meet a nested path of the same spelling
                name = f"{name}#{len(tensors)}"
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {"__tensor__": name}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: encode(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            pairs = []
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool)) or k is None:
                    raise TypeError(f"cannot store the state key {k!r} at {path or '<root>'}: not a str or number.")
                pairs.append([k, encode(v, f"{path}.{k}" if path else str(k))])
            return {"__dict__": pairs}
        raise TypeError(
            f"cannot store a {type(value).__name__} at {path or '<root>'} in a checkpoint (only tensors, numbers, "
            "strings, lists, tuples and dicts are saved; nothing is pickled)."
        )

    return encode(obj, prefix), tensors


def unflatten_state(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state`; unknown tags or missing tensors raise ValueError."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            name = value["__tensor__"]
            if name not in tensors:
                raise ValueError(f"the structure refers to a tensor {name!r} the file does not hold.")
            return tensors[name]
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: decode(v) for k, v in value["__dict__"]}
        bad = [k for k in value if k.startswith("__")]
        if bad:
            raise ValueError(f"unknown tag(s) {bad} in a checkpoint structure.")
        return {k: decode(v) for k, v in value.items()}

    return decode(structure)


def save_state_file(path: str | os.PathLike, state: Any, metadata: dict[str, str] | None = None) -> None:
    """One safetensors file holding the tensors of ``state`` and, in its metadata, the structure around them."""
    structure, tensors = flatten_state(state)
    save_file(tensors, str(path), metadata={**(metadata or {}), _STRUCTURE_KEY: json.dumps(structure)})


def _damaged(path: Path, problem: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(f"{path}: {problem}")


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing or truncated file is a DamagedCheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _damaged(path, f"not a readable safetensors file, truncated or damaged ({err})") from None
    return tensors, metadata


def load_state_file(path: str | os.PathLike) -> Any:
    """The state :func:`save_state_file` wrote."""
    tensors, metadata = load_tensors(path)
    try:
        return unflatten_state(json.loads(metadata[_STRUCTURE_KEY]), tensors)
    except (KeyError, ValueError, TypeError) as err:
        raise _damaged(Path(path), f"no valid state structure in its metadata ({err})") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_json_atomic(path, obj, sort_keys=True)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _damaged(path, f"not valid JSON, truncated or damaged ({err})") from None


# ---- random number generators --------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's torch (CPU and CUDA), numpy and python RNG states as tensors plus JSON metadata."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    tensors["python_state"] = torch.tensor(py_internal, dtype=torch.int64)
    metadata = {
        "numpy": json.dumps([np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]),
        "python": json.dumps([py_version, py_gauss]),
    }
    return tensors, metadata


def restore_rng_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[f"torch_cuda_{i}"] for i in range(torch.cuda.device_count()) if f"torch_cuda_{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    np_name, np_pos, np_has_gauss, np_gauss = json.loads(metadata["numpy"])
    np.random.set_state(
        (np_name, tensors["numpy_keys"].numpy().astype(np.uint32), int(np_pos), int(np_has_gauss), float(np_gauss))
    )
    py_version, py_gauss = json.loads(metadata["python"])
    random.setstate((int(py_version), tuple(int(v) for v in tensors["python_state"].tolist()), py_gauss))


def check_rng_file(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Raise DamagedCheckpointError unless the file holds a complete RNG state."""
    missing = [k for k in ("torch_cpu", "numpy_keys", "python_state") if k not in tensors]
    missing += [k for k in ("numpy", "python") if k not in metadata]
    if missing:
        raise _damaged(path, f"incomplete random-number state (missing {missing})")
    try:
        json.loads(metadata["numpy"]), json.loads(metadata["python"])
    except ValueError as err:
        raise _damaged(path, f"random-number state metadata is not valid JSON ({err})") from None
