"""The two proxy encoders: the adapter merged at high quality (gallery) and at low quality (probes).

An export folder holds ``gallery_encoder/``, ``probe_encoder/`` and ``petal_peft_proxy_export.json``, the record
of what was merged: the merged module names, the two quality levels and a fingerprint of the adapter. With it,
:func:`check_proxy_encoders` refuses encoders that do not come from a given base model (every tensor the merge
left alone must equal the base's) or adapter (the fingerprints must match).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import apply_umask, make_temp_dir, write_file_atomic
from .fingerprint import adapter_fingerprint

__all__ = [
    "GALLERY_ENCODER",
    "PROBE_ENCODER",
    "PROXY_EXPORT_RECORD",
    "check_proxy_encoders",
    "export_proxy_encoders",
    "merged_encoder",
    "read_proxy_export_record",
]

GALLERY_ENCODER = "gallery_encoder"
PROBE_ENCODER = "probe_encoder"
PROXY_EXPORT_RECORD = "petal_peft_proxy_export.json"
_RECORD_FORMAT = "petal-peft proxy encoders"
_PEFT_PREFIX = "base_model.model."


def merged_encoder(peft_model: nn.Module, quality: float) -> nn.Module:
    """A plain copy of the base model with the active adapter merged at ``quality`` (the PeftModel is untouched)."""
    return copy.deepcopy(peft_model).merge_and_unload(quality=quality)


def _merged_module_names(peft_model: nn.Module) -> list[str]:
    from .gated_layer import QualityGatedLayer

    return sorted(
        name.removeprefix(_PEFT_PREFIX)
        for name, module in peft_model.named_modules()
        if isinstance(module, QualityGatedLayer)
    )


def _save_atomic(model: Any, directory: Path) -> None:
    """Save into a temporary sibling, then swap it in; the previous version is deleted only after."""
    staging = make_temp_dir(directory.parent, prefix=f".{directory.name}.")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        apply_umask(staging)
        if directory.exists():
            backup = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(staging, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_proxy_export_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The export record in ``folder`` (None when there is none); a damaged record is a ValueError."""
    path = Path(folder) / PROXY_EXPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        raise ValueError(f"{path} is not a petal-peft proxy export record.")
    return record


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_file_atomic(folder / PROXY_EXPORT_RECORD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _check_export_target(folder: Path) -> None:
    """Refuse a folder whose encoder subfolders are not ours; nothing else in it is touched."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"proxy encoder folder {folder} is a file.")
    if not folder.is_dir():
        return
    record = read_proxy_export_record(folder)
    occupied = [name for name in (GALLERY_ENCODER, PROBE_ENCODER) if (folder / name).exists()]
    if occupied and record is None:
        raise FileExistsError(
            f"{folder} already holds {', '.join(occupied)} that petal-peft did not export (no "
            f"{PROXY_EXPORT_RECORD}); refusing to replace them. Choose another folder or move them away."
        )


def export_proxy_encoders(
    peft_model: nn.Module, output_dir: str | os.PathLike, high_quality: float = 1.0, low_quality: float = 0.0
) -> dict[str, str]:
    """Write the gallery encoder (merged at ``high_quality``) and the probe encoder (at ``low_quality``).

    Each is a plain transformers checkpoint (``config.json`` + ``model.safetensors``) that loads with
    ``AutoModel.from_pretrained`` without petal-peft, and needs no quality estimation at test time. Into an
    existing folder, only a previous export's ``gallery_encoder/``, ``probe_encoder/`` and record are replaced
    (other files are left alone; encoder folders of unknown origin are refused). Returns the two folder paths.
    """
    folder = Path(output_dir)
    _check_export_target(folder)
    for quality in (high_quality, low_quality):
        if not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"proxy encoder quality must lie in [0, 1], got {quality}.")
    encoders = {}
    for name, quality in ((GALLERY_ENCODER, high_quality), (PROBE_ENCODER, low_quality)):
        encoder = merged_encoder(peft_model, quality)
        if not hasattr(encoder, "save_pretrained"):
            raise TypeError(
                f"The base model is a {type(encoder).__name__}, not a transformers model; use "
                "merged_encoder(model, quality) and save it yourself."
            )
        encoders[name] = encoder
    record = {
        "format": _RECORD_FORMAT,
        "version": 1,
        "complete": False,
        "gallery_quality": float(high_quality),
        "probe_quality": float(low_quality),
        "merged_modules": _merged_module_names(peft_model),
        "adapter_fingerprint": adapter_fingerprint(peft_model),
        "base_model_class": type(encoders[GALLERY_ENCODER]).__name__,
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write_record(folder, record)  # marks the folder as ours before its encoders change
    paths = {}
    for name, encoder in encoders.items():
        _save_atomic(encoder, folder / name)
        paths[name] = str(folder / name)
    _write_record(folder, {**record, "complete": True})
    return paths


def _untouched_mismatches(
    encoder: nn.Module, base_state: dict[str, torch.Tensor], merged: set[str]
) -> tuple[list[str], list[str]]:
    """(tensor names whose shapes or presence differ, tensor names whose values differ) outside merged layers."""
    enc_state = encoder.state_dict()
    structural = sorted(set(enc_state) ^ set(base_state))
    differing = []
    for key, tensor in enc_state.items():
        if key not in base_state:
            continue
        reference = base_state[key]
        if tensor.shape != reference.shape:
            structural.append(key)
            continue
        module = key.rsplit(".", 1)[0]
        if module in merged and key.endswith(".weight"):
            continue  # the merge changed this one
        same = torch.equal(tensor.detach().to(device="cpu", dtype=reference.dtype), reference.detach().cpu())
        if not same:
            differing.append(key)
    return structural, differing


def check_proxy_encoders(
    folder: str | os.PathLike,
    gallery: nn.Module,
    probe: nn.Module,
    base_model: nn.Module | None = None,
    peft_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Refuse encoders that were not exported from ``base_model`` (and ``peft_model``'s adapter, when given).

    Needs the export record; returns it. Every tensor outside the merged layers must equal the base model's
    (after casting to the base's dtype); the adapter's fingerprint must equal the recorded one.
    """
    folder = Path(folder)
    record = read_proxy_export_record(folder)
    if record is None:
        raise ValueError(
            f"proxy encoder folder {folder} has no {PROXY_EXPORT_RECORD}, so nothing says which model and adapter "
            "it came from; export it again with petal_peft.export_proxy_encoders."
        )
    if not record.get("complete"):
        raise ValueError(f"the proxy encoder export in {folder} was interrupted; export it again.")
    if peft_model is not None:
        if adapter_fingerprint(peft_model) != record.get("adapter_fingerprint"):
            raise ValueError(
                f"the proxy encoders in {folder} were not merged from this adapter (its weights differ from the "
                "exported one's); export them again from this adapter, or evaluate without --adapter."
            )
    if base_model is not None:
        base_state = {k: v for k, v in base_model.state_dict().items()}
        merged = set(record.get("merged_modules", []))
        for name, encoder in ((GALLERY_ENCODER, gallery), (PROBE_ENCODER, probe)):
            structural, differing = _untouched_mismatches(encoder, base_state, merged)
            if structural:
                raise ValueError(
                    f"{folder / name} does not have the layout of the base model (tensors that differ in name or "
                    f"shape, e.g. {structural[:3]}): it was exported from another architecture."
                )
            if differing:
                raise ValueError(
                    f"{folder / name} was not exported from this base model: {len(differing)} tensor(s) that the "
                    f"merge leaves untouched differ from the base's (e.g. {differing[:3]})."
                )
    return record
