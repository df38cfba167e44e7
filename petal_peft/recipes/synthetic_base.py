"""The small pretrained face-recognition ViT used by benchmarks and as the embedded default: its recipe and loader.

No pretrained face weights can be downloaded here, so the base is trained locally and deterministically: a
transformers ``ViTModel`` (with its pooler, so ``pooler.dense`` is a final projection an adapter can target)
trained with a CosFace margin head on sharp images of the *pretrain* group of procedural synthetic identities
(:mod:`petal_peft.data.synthetic_identities`). They are NOT faces: no real identity-labelled face set large
enough ships in a reachable package registry (docs/real_faces.md). Real faces, where a user has them, are for
evaluation only.

The weights of the default settings ship inside the package (``petal_peft/zoo/weights/<SHIPPED_BASE_NAME>/``,
fp16 safetensors, loaded as fp32), so the first call loads instantly. Other settings, or ``rebuild=True``, train
the base (a few minutes on 2 CPU cores), store it under ``$PETAL_PEFT_CACHE`` (default ``~/.cache/petal_peft``)
keyed by a hash of every setting, and reload it from there on later calls.

Synthetic identity groups (``synthetic_identity_groups``): the base saw only the *pretrain* group; *adapt* and
*eval* are disjoint ranges it never saw, for adapter training and for evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTModel

from petal_peft.data.synthetic_identities import SyntheticIdentities
from petal_peft.files import atomic_directory
from petal_peft.heads import CombinedMarginHead
from petal_peft.recipes.common import cosine_lr, deterministic

__all__ = [
    "BASE_FORMAT_VERSION",
    "SHIPPED_BASE_NAME",
    "PretrainSettings",
    "SyntheticIdentityGroups",
    "base_cache_dir",
    "build_pretrained_base",
    "embed",
    "get_pretrained_base",
    "load_base_dir",
    "normalize_pixels",
    "random_init_base",
    "save_base_dir",
    "shipped_base_dir",
    "synthetic_identity_groups",
]

#: bumped when the training code changes in a way that changes the weights (part of the cache key).
BASE_FORMAT_VERSION = 2
#: folder under ``petal_peft/zoo/weights/`` holding the shipped base built from ``PretrainSettings()``.
SHIPPED_BASE_NAME = "face-vit-tiny-synth"
_META_NAME = "petal_base.json"
_WEIGHTS_NAME = "model.safetensors"
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
#: seed of the synthetic population every group is drawn from (identity i is the same glyph everywhere).
SYNTHETIC_POPULATION_SEED = 0
#: first identity index of the adapt and eval groups; the pretrain group [0, num_identities) must stay below.
ADAPT_FIRST_ID, EVAL_FIRST_ID, GROUP_SIZE = 5000, 6000, 1000


@dataclass(frozen=True)
class SyntheticIdentityGroups:
    """Disjoint identity-index ranges of one synthetic population (``population(image_size)``)."""

    pretrain: range  # the identities the shipped base was trained on
    adapt: range  # never seen by the base: for adapter / head training
    eval: range  # never seen by the base nor by adaptation: for evaluation
    seed: int = SYNTHETIC_POPULATION_SEED

    def population(self, image_size: int) -> SyntheticIdentities:
        """The population holding all three groups, rendered at ``image_size`` pixels."""
        return SyntheticIdentities(self.eval.stop, image_size, self.seed)


def synthetic_identity_groups() -> SyntheticIdentityGroups:
    """The project's (pretrain, adapt, eval) synthetic identity ranges: pretrain = the ids the shipped base
    saw ([0, 400)), adapt = [5000, 6000), eval = [6000, 7000); disjoint by construction."""
    s = PretrainSettings()
    return SyntheticIdentityGroups(
        pretrain=range(0, s.num_identities),
        adapt=range(ADAPT_FIRST_ID, ADAPT_FIRST_ID + GROUP_SIZE),
        eval=range(EVAL_FIRST_ID, EVAL_FIRST_ID + GROUP_SIZE),
        seed=s.data_seed,
    )


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the base's weights (all of it goes into the cache key).

    The defaults are the shipped base; they were chosen with ``benchmarks/pretrain_base.py`` so the build stays
    a few minutes on 2 CPU cores while clearly beating random init on held-out identities.
    """

    # backbone: 4x4 patches of 8 px at 32 px (probes of interest are 10-20 px anyway)
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    image_size: int = 32
    patch_size: int = 8
    # data: synthetic identities [0, num_identities) of population `data_seed`, images [0, images_per_identity)
    num_identities: int = 400
    images_per_identity: int = 48
    data_seed: int = SYNTHETIC_POPULATION_SEED
    # training
    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 5.0
    head_scale: float = 32.0
    head_margin: float = 0.2  # CosFace additive cosine margin (m3)
    margin_warmup_steps: int = 250  # margin ramps linearly from 0 (plain normalised softmax) to head_margin
    flip_prob: float = 0.5
    crop_pad: int = 2  # random crop after padding by this many pixels (reflect)
    seed: int = 0
    # 1 thread: on a shared 2-core machine 2 OpenMP threads ran up to 7x slower than 1 (measured); fixed
    # for bitwise reproducibility, since results may differ between thread counts.
    num_threads: int = 1

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
        if self.num_identities > ADAPT_FIRST_ID:
            raise ValueError(
                f"num_identities must be <= {ADAPT_FIRST_ID}: identities from {ADAPT_FIRST_ID} on are the "
                "adapt/eval groups the base must never see."
            )
        if self.warmup_steps < 0 or self.margin_warmup_steps < 0 or self.crop_pad < 0:
            raise ValueError("warmup_steps, margin_warmup_steps and crop_pad must be >= 0.")

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


def shipped_base_dir() -> Path:
    """Folder of the base that ships with the package (built from ``PretrainSettings()``)."""
    return Path(__file__).resolve().parents[1] / "zoo" / "weights" / SHIPPED_BASE_NAME


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


def _margin_at(step: int, s: PretrainSettings) -> float:
    """The CosFace margin starts at 0: with a full margin from step 0 the randomly initialised embedding
    cannot reach any target and the loss barely moves (what the first version of this build did)."""
    if step >= s.margin_warmup_steps:
        return s.head_margin
    return s.head_margin * step / s.margin_warmup_steps


def _render_training_set(s: PretrainSettings, progress: bool) -> torch.Tensor:
    """All training images as uint8 ``[num_identities, images_per_identity, 3, H, W]`` (rendered once)."""
    pop = SyntheticIdentities(s.num_identities, s.image_size, s.data_seed)
    out = torch.empty(s.num_identities, s.images_per_identity, 3, s.image_size, s.image_size, dtype=torch.uint8)
    chunk = max(1, 2048 // s.images_per_identity)
    img_ids = torch.arange(s.images_per_identity)
    for start in tqdm(range(0, s.num_identities, chunk), desc="rendering synthetic identities", disable=not progress):
        ids = torch.arange(start, min(start + chunk, s.num_identities))
        x = pop.render(ids.repeat_interleave(len(img_ids)), img_ids.repeat(len(ids)))
        out[ids] = (x * 255).round().to(torch.uint8).view(len(ids), len(img_ids), *x.shape[1:])
    return out


def build_pretrained_base(
    settings: PretrainSettings | None = None, progress: bool = True, loss_log: list[float] | None = None
) -> ViTModel:
    """Train the base from scratch (deterministic for a given settings object, machine and torch build).

    ``loss_log``, if given, receives the training loss of every step (for the benchmark's loss curve).
    """
    s = settings or PretrainSettings()
    with deterministic(s.num_threads):
        data = _render_training_set(s, progress)
        torch.manual_seed(s.seed)
        model = ViTModel(s.vit_config(), add_pooling_layer=True)
        head = CombinedMarginHead(s.hidden_size, s.num_identities, s=s.head_scale, m1=1.0, m2=0.0, m3=0.0)
        params = list(model.parameters()) + list(head.parameters())
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s.lr,
        )
        g = torch.Generator().manual_seed(s.seed + 1)
        model.train()
        head.train()
        bar = tqdm(range(s.steps), desc="pretraining face ViT base", disable=not progress)
        for step in bar:
            ids = torch.randint(0, s.num_identities, (s.batch_size,), generator=g)
            img_ids = torch.randint(0, s.images_per_identity, (s.batch_size,), generator=g)
            x = data[ids, img_ids].float() / 255.0
            x = normalize_pixels(_augment(x, s, g))
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, s.lr, s.warmup_steps, s.steps)
            head.m3 = _margin_at(step, s)
            loss = F.cross_entropy(head(embed(model, x), ids), ids)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining loss became {loss.item()} at step {step}.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            if loss_log is not None:
                loss_log.append(float(loss.detach()))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
    return model


def save_base_dir(model: ViTModel, settings: PretrainSettings, path: str | os.PathLike) -> Path:
    """Write the base atomically to ``path``: fp16 ``model.safetensors``, ``config.json``, the image
    processor config and ``petal_base.json`` (settings, cache key, processor settings, training identities)."""
    path = Path(path)
    with atomic_directory(path) as tmp:  # the umask decides the published folder's modes
        # fp16 halves the file (the shipped base stays ~2 MB); weights are read back as fp32.
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / _WEIGHTS_NAME), metadata={"format": "pt"})
        config = settings.vit_config()
        config.dtype = "float32"  # so AutoModel.from_pretrained(path) ("auto" dtype) also gives fp32
        config.save_pretrained(tmp)
        ps = settings.processor_settings()
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
            "cache_key": settings.cache_key(),
            "settings": settings.to_dict(),
            "processor": ps,
            "training_identities": {
                "population_seed": settings.data_seed,
                "identity_range": [0, settings.num_identities],
                "image_range": [0, settings.images_per_identity],
            },
            "training_data": "procedural synthetic identities (not faces); see docs/real_faces.md",
        }
        (tmp / _META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / _META_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(path: Path, settings: PretrainSettings) -> bool:
    meta = _read_meta(path)
    return (
        meta is not None
        and meta.get("cache_key") == settings.cache_key()
        and (path / "config.json").is_file()
        and (path / _WEIGHTS_NAME).is_file()
    )


def load_base_dir(path: str | os.PathLike) -> tuple[ViTModel, dict[str, Any]]:
    """Load a base written by ``save_base_dir``: ``(fp32 ViTModel in eval mode, processor settings)``."""
    path = Path(path)
    meta = _read_meta(path)
    if meta is None:
        raise FileNotFoundError(f"{path} holds no readable {_META_NAME}: not a petal-peft base folder.")
    config = ViTConfig.from_pretrained(path)
    model = ViTModel(config, add_pooling_layer=True)
    state = {k: v.to(torch.float32) for k, v in load_file(str(path / _WEIGHTS_NAME)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected}).")
    return model.eval(), dict(meta["processor"])


def get_pretrained_base(
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    settings: PretrainSettings | None = None,
    progress: bool = True,
) -> tuple[ViTModel, dict[str, Any]]:
    """Return ``(ViTModel, image_processor_settings)``.

    Default settings load the weights shipped in the package (no training). Other settings, or
    ``rebuild=True``, train the base deterministically on first use and cache it under ``base_cache_dir()``.
    ``image_processor_settings`` holds ``image_size``, ``image_mean`` and ``image_std``; a matching ViT image
    processor config is saved next to the weights, so ``AutoImageProcessor.from_pretrained(path)`` works.
    """
    s = settings or PretrainSettings()
    shipped = shipped_base_dir()
    if not rebuild and _is_complete(shipped, s):
        return load_base_dir(shipped)
    path = base_cache_dir(cache_dir) / f"face-vit-base-{s.cache_key()}"
    if rebuild or not _is_complete(path, s):
        save_base_dir(build_pretrained_base(s, progress=progress), s, path)
    return load_base_dir(path)
