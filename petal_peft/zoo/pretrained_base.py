"""The small pretrained face-recognition ViT used by benchmarks and as the embedded default.

No pretrained face weights can be downloaded here, so the base is built locally, deterministically, and
cached: a transformers ``ViTModel`` (with its pooler, so ``pooler.dense`` is a final projection an adapter
can target) trained with a CosFace margin head on sharp images of one group of identities. The training
identities are procedural synthetic identities (``synthetic_identities.py``), NOT faces: no real
identity-labelled face set large enough ships in a reachable package registry (docs/real_faces.md). Real
faces, where a user has them, are for evaluation only.

The build is keyed by a hash of every setting, saved with ``save_pretrained`` under
``$PETAL_PEFT_CACHE`` (default ``~/.cache/petal_peft``), and reloaded on later calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTModel

from petal_peft.heads import CombinedMarginHead
from petal_peft.zoo.synthetic_identities import SyntheticIdentities

__all__ = [
    "BASE_FORMAT_VERSION",
    "PretrainSettings",
    "base_cache_dir",
    "build_pretrained_base",
    "embed",
    "get_pretrained_base",
    "normalize_pixels",
    "random_init_base",
]

#: bumped when the training code changes in a way that changes the weights (part of the cache key).
BASE_FORMAT_VERSION = 1
_META_NAME = "petal_base.json"
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the base's weights (all of it goes into the cache key)."""

    # backbone
    hidden_size: int = 192
    num_hidden_layers: int = 6
    num_attention_heads: int = 3
    intermediate_size: int = 768
    image_size: int = 48  # 6x6 patches of 8 px: fits the <= 10 min CPU build; real sets are small anyway
    patch_size: int = 8
    # data: synthetic identities [0, num_identities) of population `data_seed`; eval code uses the ids after.
    num_identities: int = 1000
    images_per_identity: int = 24
    data_seed: int = 0
    # training
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    grad_clip: float = 5.0
    head_scale: float = 32.0
    head_margin: float = 0.35  # CosFace additive cosine margin (m3)
    flip_prob: float = 0.5
    crop_pad: int = 4  # random crop after padding by this many pixels (reflect)
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads.")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be divisible by patch_size.")
        for name in ("steps", "batch_size", "num_identities", "images_per_identity", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_identities < 2:
            raise ValueError("num_identities must be >= 2 for a classification head.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cache_key(self) -> str:
        blob = json.dumps({"version": BASE_FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def vit_config(self) -> ViTConfig:
        return ViTConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )

    def processor_settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD)}


def base_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of the cache: ``cache_dir``, else ``$PETAL_PEFT_CACHE``, else ``~/.cache/petal_peft``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("PETAL_PEFT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "petal_peft"


def normalize_pixels(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the model's input normalisation."""
    mean = torch.tensor(IMAGE_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def embed(model: ViTModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The face embedding: the pooler output if the model has a pooler, else the CLS token."""
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out.last_hidden_state[:, 0]


@contextmanager
def _deterministic(num_threads: int):
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def random_init_base(settings: PretrainSettings | None = None, seed: int | None = None) -> ViTModel:
    """A ViTModel of the same config as the base, randomly initialised (the baseline it must beat)."""
    settings = settings or PretrainSettings()
    torch.manual_seed(settings.seed if seed is None else seed)
    return ViTModel(settings.vit_config(), add_pooling_layer=True).eval()


def _augment(x: torch.Tensor, s: PretrainSettings, g: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=g) < s.flip_prob
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if s.crop_pad > 0:
        p = s.crop_pad
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        offs = torch.randint(0, 2 * p + 1, (b, 2), generator=g)
        x = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
    return x


def _lr_at(step: int, s: PretrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_pretrained_base(settings: PretrainSettings | None = None, progress: bool = True) -> ViTModel:
    """Train the base from scratch (deterministic for a given settings object, machine and torch build)."""
    s = settings or PretrainSettings()
    with _deterministic(s.num_threads):
        torch.manual_seed(s.seed)
        model = ViTModel(s.vit_config(), add_pooling_layer=True)
        head = CombinedMarginHead(s.hidden_size, s.num_identities, s=s.head_scale, m1=1.0, m2=0.0, m3=s.head_margin)
        params = list(model.parameters()) + list(head.parameters())
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s.lr,
        )
        data = SyntheticIdentities(s.num_identities, s.image_size, s.data_seed)
        g = torch.Generator().manual_seed(s.seed + 1)
        model.train()
        head.train()
        bar = tqdm(range(s.steps), desc="pretraining face ViT base", disable=not progress)
        for step in bar:
            ids = torch.randint(0, s.num_identities, (s.batch_size,), generator=g)
            img_ids = torch.randint(0, s.images_per_identity, (s.batch_size,), generator=g)
            x = normalize_pixels(_augment(data.render(ids, img_ids), s, g))
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, s)
            logits = head(embed(model, x), ids)
            loss = F.cross_entropy(logits, ids)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining loss became {loss.item()} at step {step}.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
    return model


def _is_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / _META_NAME).is_file() and any(path.glob("*.safetensors"))


def get_pretrained_base(
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    settings: PretrainSettings | None = None,
    progress: bool = True,
) -> tuple[ViTModel, dict[str, Any]]:
    """Return ``(ViTModel, image_processor_settings)``, building and caching the base on first use.

    ``image_processor_settings`` holds ``image_size``, ``image_mean`` and ``image_std``; a matching
    ViT image processor config is saved next to the weights, so ``AutoImageProcessor.from_pretrained(path)`` works.
    """
    s = settings or PretrainSettings()
    root = base_cache_dir(cache_dir)
    path = root / f"face-vit-base-{s.cache_key()}"
    if rebuild or not _is_complete(path):
        model = build_pretrained_base(s, progress=progress)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            model.save_pretrained(tmp)
            ps = s.processor_settings()
            # The PIL processor: torchvision is not a dependency, and both save the same config.
            from transformers import ViTImageProcessorPil

            ViTImageProcessorPil(
                do_resize=True,
                size={"height": ps["image_size"], "width": ps["image_size"]},
                image_mean=ps["image_mean"],
                image_std=ps["image_std"],
            ).save_pretrained(tmp)
            meta = {
                "format_version": BASE_FORMAT_VERSION,
                "settings": s.to_dict(),
                "processor": ps,
                "training_data": "procedural synthetic identities (not faces); see docs/real_faces.md",
            }
            (tmp / _META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            if path.exists():
                old = Path(tempfile.mkdtemp(dir=root, prefix=f".{path.name}.old."))
                os.replace(path, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    model = ViTModel.from_pretrained(path, add_pooling_layer=True).eval()
    return model, s.processor_settings()
