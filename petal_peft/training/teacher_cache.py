"""The frozen base's embeddings of the sharp training images: distillation targets and head prototypes.

Computed once per image and flip, before the first step, with the adapter switched off
(``PeftModel.disable_adapter()``: the teacher is the model being trained, never a second copy), and cached in
a safetensors file keyed by a fingerprint of the base weights, the data and the input settings. A later run on
the same base and data (another seed, another method) reads the file instead of running the teacher, so a
distillation step costs what a margin step costs.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import FaceDataset, FaceSubset, FaceTransform
from ..data.transforms import STREAM_FLIP, sample_generator
from ..embedding.extractor import pooled_embedding
from ..files import write_file_atomic

__all__ = [
    "IndexedFaces",
    "compute_teacher_targets",
    "imprint_head",
    "load_or_compute_teacher_targets",
    "sharp_view",
]

TARGETS_KEY = "targets"


def _root(dataset: FaceDataset, index: int) -> tuple[FaceDataset, int]:
    """The dataset that owns image ``index`` of ``dataset`` (through subset views), and its index there."""
    while isinstance(dataset, FaceSubset):
        index = dataset.indices[index]
        dataset = dataset.dataset
    return dataset, index


def is_flipped(dataset: FaceDataset, index: int) -> bool:
    """Whether item ``index`` of ``dataset`` is mirrored this epoch (the same draw as the dataset's own)."""
    root, i = _root(dataset, index)
    transform = root.transform
    if not transform.horizontal_flip:
        return False
    generator = sample_generator(root.seed, i, root.epoch, STREAM_FLIP)
    return float(torch.rand((), generator=generator)) < transform.flip_p


def sharp_view(dataset: FaceDataset, index: int) -> torch.Tensor:
    """Image ``index`` as the model sees it, but sharp (no degradation) and not mirrored: ``[3, S, S]``."""
    root, i = _root(dataset, index)
    t = root.transform
    plain = FaceTransform(t.image_size, t.mean, t.std, horizontal_flip=False, interpolation=t.interpolation)
    return plain(root.load_image(i))


class IndexedFaces(FaceSubset):
    """``dataset`` whose items also carry ``index`` (position in this dataset) and ``flipped`` (bool): where a
    distillation target is looked up."""

    def __init__(self, dataset: FaceDataset) -> None:
        super().__init__(dataset, range(len(dataset)))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._index(index)
        item = dict(self.dataset[index])
        item["index"] = torch.tensor(index, dtype=torch.long)
        item["flipped"] = torch.tensor(is_flipped(self.dataset, index))
        return item


def _is_quality_gated(model: nn.Module) -> bool:
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None))
    return str(getattr(config, "peft_type", "")).endswith("QUALITY_GATED_LORA")


@torch.no_grad()
def compute_teacher_targets(
    model: nn.Module, dataset: FaceDataset, batch_size: int = 64, progress: bool = False
) -> torch.Tensor:
    """The frozen base's embedding of every sharp image and its mirror: ``[N, 2, D]`` float32 on the CPU.

    Args:
        model: the backbone being trained: a PeftModel (its adapter is switched off here) or, before any
            training step, the base itself.
        dataset: the training images.
        batch_size: images per forward.
        progress: show a progress bar.

    Returns:
        ``targets[i, 0]`` for image ``i``, ``targets[i, 1]`` for its mirror.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    switch_off = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    gated = _is_quality_gated(model)
    out = []
    bar = tqdm(total=len(dataset), desc="teacher targets", disable=not progress)
    try:
        with switch_off:
            for start in range(0, len(dataset), batch_size):
                x = torch.stack([sharp_view(dataset, i) for i in range(start, min(start + batch_size, len(dataset)))])
                x = torch.cat([x, x.flip(-1)]).to(device)
                kwargs = {"quality": torch.ones(len(x), device=device)} if gated else {}
                emb = pooled_embedding(model(pixel_values=x, **kwargs)).float().cpu()
                n = len(x) // 2
                out.append(torch.stack([emb[:n], emb[n:]], dim=1))
                bar.update(n)
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(out)


def targets_fingerprint(base_fingerprint: str, data_fingerprint: dict[str, Any], transform: FaceTransform) -> str:
    """What the targets depend on: the base weights, the images, the input size and normalisation."""
    text = json.dumps(
        {
            "base": base_fingerprint,
            "data": data_fingerprint,
            "size": transform.image_size,
            "mean": transform.mean,
            "std": transform.std,
            "interpolation": transform.interpolation,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def read_cached_targets(path: str | os.PathLike, fingerprint: str) -> torch.Tensor | None:
    """The targets stored at ``path`` when they were computed for ``fingerprint``, else None."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return f.get_tensor(TARGETS_KEY)
    except (OSError, ValueError, RuntimeError):  # damaged or foreign file: compute afresh
        return None


def load_or_compute_teacher_targets(
    model: nn.Module,
    dataset: FaceDataset,
    cache_path: str | os.PathLike,
    fingerprint: str,
    batch_size: int = 64,
    progress: bool = False,
    write: bool = True,
) -> tuple[torch.Tensor, bool]:
    """``(targets, computed)``: read from ``cache_path`` when its fingerprint matches, else computed (see
    :func:`compute_teacher_targets`) and, with ``write``, saved there atomically."""
    from safetensors.torch import save_file

    cached = read_cached_targets(cache_path, fingerprint)
    if cached is not None and cached.shape[0] == len(dataset):
        return cached, False
    targets = compute_teacher_targets(model, dataset, batch_size=batch_size, progress=progress)
    if write:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(
            cache_path,
            lambda tmp: save_file({TARGETS_KEY: targets.contiguous()}, tmp, metadata={"fingerprint": fingerprint}),
        )
    return targets, True


@torch.no_grad()
def imprint_head(head: nn.Module, targets: torch.Tensor, labels: list[int] | torch.Tensor) -> torch.Tensor:
    """Start a margin head from class prototypes: row ``c`` = the normalised mean of the normalised sharp
    embeddings (both flips) of identity ``c``'s images. Returns the prototypes ``[C, D]``.

    Args:
        head: a :class:`petal_peft.heads.FaceHead` (``weight`` of shape ``[C, D]``).
        targets: ``[N, 2, D]`` teacher embeddings of the training images.
        labels: the identity of each of the N images (``-100``: ignored).
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    weight = head.weight
    classes, dim = weight.shape
    if targets.shape[0] != len(labels) or targets.shape[-1] != dim:
        raise ValueError(f"targets {tuple(targets.shape)} do not fit {len(labels)} labels and a head of width {dim}.")
    unit = torch.nn.functional.normalize(targets.float(), dim=-1).mean(dim=1)
    keep = (labels >= 0) & (labels < classes)
    sums = torch.zeros(classes, dim).index_add_(0, labels[keep], unit[keep])
    counts = torch.bincount(labels[keep], minlength=classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"cannot imprint the head: classes {missing} have no image.")
    prototypes = torch.nn.functional.normalize(sums, dim=-1)
    weight.copy_(prototypes.to(weight.dtype).to(weight.device))
    return prototypes
