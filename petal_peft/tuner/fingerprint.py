"""Cheap, dtype-independent fingerprints of a model's weights, to tell "the same model" from "another one".

A fingerprint hashes every tensor's name and shape and a fixed, evenly spaced sample of its values (as
float32, so a model loaded in bfloat16 from bf16 weights hashes like the same weights loaded in float32).
Two unrelated models differ in practically every sampled value; a file edited in a few places may not be
caught, which is not what this is for (it tells runs and models apart, it does not authenticate them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

__all__ = ["adapter_fingerprint", "tensor_fingerprint"]


def _sample(tensor: torch.Tensor, samples: int | None) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    if samples is not None and flat.numel() > samples:
        step = flat.numel() // samples
        flat = flat[::step][:samples]
    return flat.to(device="cpu", dtype=torch.float32).contiguous()


def tensor_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]], samples: int | None = 64) -> str:
    """sha256 over (name, shape, sampled float32 values) of each tensor, in name order; ``samples=None``
    hashes every value."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(_sample(tensor, samples).numpy().tobytes())
    return digest.hexdigest()


def adapter_fingerprint(peft_model: torch.nn.Module, adapter_name: str | None = None) -> str:
    """Every value of the adapter's saved tensors (as ``save_pretrained`` would write them), hashed."""
    from peft.utils import get_peft_model_state_dict

    name = adapter_name or getattr(peft_model, "active_adapter", None) or "default"
    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    return tensor_fingerprint(state.items(), samples=None)
