"""The two proxy encoders: the adapter merged at high quality (gallery) and at low quality (probes)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Any

from torch import nn

GALLERY_ENCODER = "gallery_encoder"
PROBE_ENCODER = "probe_encoder"


def merged_encoder(peft_model: nn.Module, quality: float) -> nn.Module:
    """A plain copy of the base model with the active adapter merged at ``quality`` (the PeftModel is untouched)."""
    return copy.deepcopy(peft_model).merge_and_unload(quality=quality)


def _save_atomic(model: Any, directory: str, **kwargs: Any) -> None:
    parent = os.path.dirname(os.path.abspath(directory)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.tmp-")
    try:
        model.save_pretrained(staging, safe_serialization=True, **kwargs)
        if os.path.isdir(directory):
            backup = directory + ".old"
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(staging, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_proxy_encoders(
    peft_model: nn.Module, output_dir: str, high_quality: float = 1.0, low_quality: float = 0.0
) -> dict[str, str]:
    """Write the gallery encoder (merged at ``high_quality``) and the probe encoder (at ``low_quality``).

    Each is a plain transformers checkpoint (``config.json`` + ``model.safetensors``) that loads with
    ``AutoModel.from_pretrained`` without petal-peft, and needs no quality estimation at test time.
    Returns the two folder paths.
    """
    paths = {}
    for name, quality in ((GALLERY_ENCODER, high_quality), (PROBE_ENCODER, low_quality)):
        encoder = merged_encoder(peft_model, quality)
        if not hasattr(encoder, "save_pretrained"):
            raise TypeError(
                f"The base model is a {type(encoder).__name__}, not a transformers model; use "
                "merged_encoder(model, quality) and save it yourself."
            )
        path = os.path.join(output_dir, name)
        _save_atomic(encoder, path)
        paths[name] = path
    return paths
