"""The base model of a run, and the trained models each method leaves behind.

Bases: ``"pretrained"`` (the small face ViT shipped in the package, trained on synthetic identities),
``"random"`` (a tiny random ViT at 32 px: pipeline checks), ``"standin-vit[:layers,width,patch,size]"`` (a
random ViT of a real face base's size, default 6 layers, 192 wide, patch 8, 112 px: timing and dry runs),
or a folder that ``AutoModel`` and ``AutoImageProcessor`` load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_base", "load_trained", "prepare_base", "publish_run_folder", "weights_file_size"]


def _save_random_vit(path: Path, layers: int, width: int, patch: int, size: int, heads: int) -> dict[str, Any]:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width if width > 32 else 2 * width,
        image_size=size,
        patch_size=patch,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    ViTModel(config, add_pooling_layer=True).save_pretrained(path)
    processor = ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(path)
    return {"image_size": size, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}


def _standin_shape(spec: str) -> tuple[int, int, int, int]:
    values = spec.split(":", 1)[1].split(",") if ":" in spec else []
    if values and len(values) != 4:
        raise ValueError(f"--base {spec!r}: write standin-vit:LAYERS,WIDTH,PATCH,SIZE, e.g. standin-vit:6,192,8,112.")
    try:
        layers, width, patch, size = (int(v) for v in values) if values else (6, 192, 8, 112)
    except ValueError:
        raise ValueError(f"--base {spec!r}: LAYERS,WIDTH,PATCH,SIZE must be integers.") from None
    if width % 64 or size % patch or min(layers, width, patch, size) < 1:
        raise ValueError(f"--base {spec!r}: WIDTH must be a multiple of 64 and SIZE a multiple of PATCH.")
    return layers, width, patch, size


def prepare_base(base: str, work: Path, progress: bool = True) -> tuple[str | None, dict[str, Any]]:
    """(base_model for the training config, processor settings). None means the shipped pretrained base."""
    if base == "pretrained":
        from ..recipes.synthetic_base import PretrainSettings, get_pretrained_base

        get_pretrained_base(progress=progress)  # load (or build once and cache) before timing anything
        return None, PretrainSettings().processor_settings()
    if base == "random":
        path = work / "random-base"
        return str(path), _save_random_vit(path, layers=2, width=32, patch=8, size=32, heads=2)
    if base.split(":", 1)[0] == "standin-vit":
        layers, width, patch, size = _standin_shape(base)
        path = work / "standin-base"
        return str(path), _save_random_vit(path, layers, width, patch, size, heads=width // 64)
    if not Path(base).is_dir():
        raise FileNotFoundError(
            f"--base {base!r} is not a folder; use a model folder, 'pretrained', 'random' or 'standin-vit'."
        )
    from ..embedding.loading import read_image_settings

    info = read_image_settings(base)
    return base, {"image_size": info.image_size, "image_mean": info.image_mean, "image_std": info.image_std}


def load_base(base_model: str | None) -> torch.nn.Module:
    """The base model of a run (None: the shipped small face ViT), in eval mode."""
    from ..embedding.loading import load_base_model

    return load_base_model(base_model, progress=False)


def load_trained(finetune_method: str, base_model: str | None, folder: str | os.PathLike) -> torch.nn.Module:
    """A saved run folder read back the way a user would: ``AutoModel`` (full) or ``PeftModel`` (adapters)."""
    if finetune_method == "full":
        from transformers import AutoModel

        return AutoModel.from_pretrained(folder).float().eval()
    from peft import PeftModel

    import petal_peft  # noqa: F401  (registers the quality-gated adapter type)

    return PeftModel.from_pretrained(load_base(base_model), str(folder)).eval()


def weights_file_size(folder: str | os.PathLike) -> int:
    for name in ("adapter_model.safetensors", "model.safetensors"):
        p = Path(folder) / name
        if p.is_file():
            return p.stat().st_size
    return 0


def publish_run_folder(adapter_dir: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a finished training's adapter (or full model) folder to ``final`` (``<out>/<method>/seed<k>``)."""
    from ..files import publish_directory

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    publish_directory(adapter_dir, final)  # gives the folder the umask's modes
    return final
