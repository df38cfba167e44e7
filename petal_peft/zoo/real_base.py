"""A real face-recognition transformer, distilled offline from dlib's ResNet by function matching.

The base model petal-peft adapts must recognise real faces, and the face photos at hand (LFW folds and a few
Glint360K celebrities: about 5,700 images of the base identity group) are far too few to train a face
recogniser from labels. So a small ViT learns to reproduce dlib's face descriptor (a CC0 ResNet, run in torch by
:mod:`petal_peft.zoo.dlib_resnet`) by *function matching* (Beyer et al., "Knowledge distillation: a good teacher
is patient and consistent", CVPR 2022): at every step teacher and student see the same freshly augmented view
(random similarity warp, mirror, colour jitter, mixup of two faces), so the student learns the teacher's function
around the images, not just its values on them. Labels are not used.

Geometry: every photo is aligned once (:mod:`petal_peft.align`, dlib's detector and 5 landmarks) to the ArcFace
112x112 crop with ``canvas_margin`` pixels of context on each side. The student sees the ArcFace crop (resized to
its input size); the teacher sees dlib's own 150x150 chip (padding 0.25), cut from the same augmented canvas by a
fixed similarity, so each network gets its native framing of the same face.

:func:`build_real_face_base` runs it all and writes a folder ``AutoModel`` / ``AutoImageProcessor`` load
(a plain ``ViTModel``; the 128-d embedding is ``pooler_output``), with a model card, the base identities and the
measured verification accuracy on held-out LFW pairs next to the teacher's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "RealBaseSettings",
    "balanced_order",
    "model_card",
    "save_real_face_base",
    "FaceCanvases",
    "ViewSampler",
    "build_real_face_base",
    "build_student",
    "distill",
    "verification_accuracy",
]


@dataclass(frozen=True)
class RealBaseSettings:
    """Every setting of a build (recorded in the output folder)."""

    # alignment
    canvas_margin: int = 16  # context around the ArcFace 112 crop (for augmentation and the teacher's chip)
    align_workers: int = 2
    # student: "conv_vit" (petal-peft's FaceConvViTModel, whose conv stem starts as the teacher's first
    # ``stem_units`` residual units) or "vit" (a plain transformers ViTModel)
    architecture: str = "conv_vit"
    # the student's framing: "arcface" (the ArcFace 112 crop, resized to image_size) or "dlib" (the teacher's own
    # 150 px chip, resized to image_size)
    student_template: str = "arcface"
    stem_units: int = 10
    freeze_stem: bool = False
    stem_lr_scale: float = 0.1  # learning-rate factor for the stem when it is not frozen
    image_size: int = 112
    patch_size: int = 8  # ViT only
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: int = 4
    embedding_dim: int = 128  # pooler_output size (the teacher's descriptor size)
    # distillation
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 5.0
    cosine_weight: float = 1.0
    relational_weight: float = 1.0
    # augmentation (per image; the teacher sees the same view)
    scale_range: tuple[float, float] = (0.9, 1.12)
    max_rotation_deg: float = 10.0
    max_shift: float = 8.0  # pixels of the 112 crop
    flip_prob: float = 0.5
    colour_jitter: float = 0.3  # brightness / contrast / saturation factors in [1 - j, 1 + j]
    grey_prob: float = 0.1
    mixup_prob: float = 0.5  # share of each batch mixed with another image, weight ~ U(0, 1)
    # bookkeeping
    seed: int = 0
    threads: int = 2
    eval_every: int = 300  # steps between checks on the validation pairs (LFW fold 3; 0: none)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------------
# Aligned images
# ------------------------------------------------------------------------------------------------------------


@dataclass
class FaceCanvases:
    """Aligned faces, uint8 [N, S, S, 3]: the ArcFace 112 crop with ``margin`` pixels of context per side."""

    images: np.ndarray
    margin: int
    methods: list[str]

    @property
    def crop_size(self) -> int:
        return self.images.shape[1] - 2 * self.margin

    def tensor(self, index: Sequence[int] | np.ndarray | slice) -> torch.Tensor:
        """Float RGB [B, 3, S, S] in [0, 1]."""
        return torch.from_numpy(self.images[index]).permute(0, 3, 1, 2).float().div_(255.0)

    @classmethod
    def align(cls, paths: Sequence[str | os.PathLike], margin: int, workers: int = 1, desc: str = "aligning"):
        from petal_peft.align.folder import align_images

        images, methods = align_images(list(paths), size=112, margin=margin, workers=workers, desc=desc)
        return cls(images, margin, methods)

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz atomically (an interrupted build leaves no half cache behind)."""
        from petal_peft.files import write_file_atomic

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, images=self.images, margin=self.margin, methods=np.array(self.methods))

        write_file_atomic(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaceCanvases:
        with np.load(path, allow_pickle=False) as d:
            return cls(d["images"], int(d["margin"]), [str(m) for m in d["methods"]])


# ------------------------------------------------------------------------------------------------------------
# Function matching views
# ------------------------------------------------------------------------------------------------------------


def _similarity(scale: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor, centre: float) -> torch.Tensor:
    """[B, 2, 3] maps p -> centre + scale * R(angle) (p - centre) + shift, float64."""
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    m = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    t = centre + shift - (m @ torch.full((2, 1), centre, dtype=torch.float64)).squeeze(-1)
    return torch.cat([m, t[..., None]], dim=-1)


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    return torch.cat([outer[..., :2] @ inner[..., :2], outer[..., :2] @ inner[..., 2:] + outer[..., 2:]], dim=-1)


class ViewSampler:
    """Draws augmented views of a batch of canvases for the student and the teacher (the same view for both).

    ``student_size``: the student's input size (the ArcFace 112 crop resized); the teacher's view is dlib's 150 px
    chip (padding 0.25). Both are float RGB in [0, 1].
    """

    def __init__(self, settings: RealBaseSettings, margin: int, teacher_size: int = 150) -> None:
        from petal_peft.align.geometry import landmark_template, template_to_template

        self.s = settings
        self.margin = margin
        self.student_size = settings.image_size
        self.teacher_size = teacher_size
        # crop pixel -> canvas pixel (identity + margin); teacher chip pixel -> ArcFace-112 crop pixel
        self.teacher_to_crop = torch.from_numpy(
            template_to_template(landmark_template("arcface", 112), landmark_template("dlib", teacher_size))
        )

    def _augment_matrices(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """[n, 2, 3] crop-frame maps (augmented view pixel -> crop pixel), float64."""
        s = self.s
        u = torch.rand(n, 5, generator=gen, dtype=torch.float64)
        lo, hi = math.log(s.scale_range[0]), math.log(s.scale_range[1])
        scale = torch.exp(lo + (hi - lo) * u[:, 0])
        angle = (2 * u[:, 1] - 1) * math.radians(s.max_rotation_deg)
        shift = (2 * u[:, 2:4] - 1) * s.max_shift
        m = _similarity(scale, angle, shift, centre=55.5)
        flip = u[:, 4] < s.flip_prob
        mirror = torch.tensor([[-1.0, 0.0, 111.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        m[flip] = _compose(m[flip], mirror.expand(int(flip.sum()), 2, 3))
        return m

    def _colour(self, n: int, gen: torch.Generator) -> torch.Tensor:
        j = self.s.colour_jitter
        u = torch.rand(n, 4, generator=gen)
        factors = 1 - j + 2 * j * u[:, :3]
        grey = (u[:, 3] < self.s.grey_prob).float()
        return torch.cat([factors, grey[:, None]], dim=1)

    @staticmethod
    def _apply_colour(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, k, sat, grey = (c[:, i].view(-1, 1, 1, 1) for i in range(4))
        x = x * b
        lum = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = lum.mean(dim=(2, 3), keepdim=True) + k * (x - lum.mean(dim=(2, 3), keepdim=True))
        lum = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        sat = sat * (1 - grey)
        return (lum + sat * (x - lum)).clamp(0, 1)

    def _warp(self, canvases: torch.Tensor, crop_maps: torch.Tensor, size: int, to_crop: torch.Tensor) -> torch.Tensor:
        from petal_peft.align.geometry import warp_affine

        m = _compose(crop_maps, to_crop.expand(len(crop_maps), 2, 3))
        m[:, :, 2] += self.margin
        return warp_affine(canvases, m, size, antialias=False)

    def student_view(self, canvases: torch.Tensor, crop_maps: torch.Tensor) -> torch.Tensor:
        """The ArcFace crop under ``crop_maps``, at 112 then resized (antialiased) to the student's size."""
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        x = self._warp(canvases, crop_maps, 112, identity)
        if self.student_size != 112:
            x = F.interpolate(x, size=(self.student_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return x

    def teacher_view(self, canvases: torch.Tensor, crop_maps: torch.Tensor) -> torch.Tensor:
        return self._warp(canvases, crop_maps, self.teacher_size, self.teacher_to_crop)

    def sample(self, canvases: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(student views, teacher views) of one augmented view per canvas [B, 3, S, S] (float, 0..1)."""
        n = canvases.shape[0]
        maps = self._augment_matrices(n, gen)
        colour = self._colour(n, gen)
        teacher = self._apply_colour(self.teacher_view(canvases, maps), colour)
        if self.s.student_template == "dlib":
            student = teacher
            if self.student_size != self.teacher_size:
                size = (self.student_size, self.student_size)
                student = F.interpolate(teacher, size=size, mode="bilinear", antialias=True, align_corners=False)
        else:
            student = self._apply_colour(self.student_view(canvases, maps), colour)
        if self.s.mixup_prob > 0:
            partner = torch.randperm(n, generator=gen)
            lam = torch.rand(n, generator=gen)
            lam = torch.where(torch.rand(n, generator=gen) < self.s.mixup_prob, lam, torch.ones(n)).view(-1, 1, 1, 1)
            student = lam * student + (1 - lam) * student[partner]
            teacher = lam * teacher + (1 - lam) * teacher[partner]
        return student, teacher


# ------------------------------------------------------------------------------------------------------------
# Student, loss, evaluation
# ------------------------------------------------------------------------------------------------------------


#: dlib's input normalisation ((x - mean) / 256 on 0..255 values) as an image processor's mean and std
DLIB_IMAGE_MEAN = (122.782 / 255, 117.001 / 255, 104.298 / 255)
DLIB_IMAGE_STD = (256 / 255,) * 3


def student_normalization(settings: RealBaseSettings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The student's image mean and std (its image processor's): 0.5 for the ViT, dlib's for the conv stem."""
    if settings.architecture == "conv_vit":
        return DLIB_IMAGE_MEAN, DLIB_IMAGE_STD
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def build_student(settings: RealBaseSettings, teacher: torch.nn.Module | None = None) -> torch.nn.Module:
    """The student: a plain ``ViTModel`` (``architecture="vit"``) or a ``FaceConvViTModel`` whose stem is copied
    from the teacher's first ``stem_units`` residual units (``"conv_vit"``). Either way ``pooler_output`` (a
    linear map of the CLS token / of the mean token) is the 128-d embedding."""
    s = settings
    if s.architecture == "conv_vit":
        return _build_conv_vit(s, teacher)
    if s.architecture != "vit":
        raise ValueError(f"architecture must be 'vit' or 'conv_vit', got {s.architecture!r}.")
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=s.hidden_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        intermediate_size=s.mlp_ratio * s.hidden_size,
        image_size=s.image_size,
        patch_size=s.patch_size,
        pooler_output_size=s.embedding_dim,
        pooler_act="linear",
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    return ViTModel(config, add_pooling_layer=True)


def _build_conv_vit(s: RealBaseSettings, teacher: torch.nn.Module | None) -> torch.nn.Module:
    from petal_peft.models.face_conv_vit import FaceConvViTConfig, FaceConvViTModel

    if teacher is None:
        raise ValueError("the conv_vit student copies its stem from the teacher: pass teacher=.")
    units = list(teacher.units)[: s.stem_units]
    config = FaceConvViTConfig(
        image_size=s.image_size,
        stem_channels=teacher.stem.out_channels,
        stem_kernel_size=teacher.stem.kernel_size[0],
        stem_units=[[u.conv1.out_channels, u.conv1.stride[0]] for u in units],
        hidden_size=s.hidden_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        intermediate_size=s.mlp_ratio * s.hidden_size,
        embedding_size=s.embedding_dim,
    )
    model = FaceConvViTModel(config)
    stem = model.embeddings.stem
    with torch.no_grad():
        stem.conv.weight.copy_(teacher.stem.weight)
        stem.conv.bias.copy_(teacher.stem.bias)
        for mine, theirs in zip(stem.units, units):
            for name in ("conv1", "conv2"):
                getattr(mine, name).weight.copy_(getattr(theirs, name).weight)
                getattr(mine, name).bias.copy_(getattr(theirs, name).bias)
    if s.freeze_stem:
        stem.requires_grad_(False)
    return model


def normalizer(settings: RealBaseSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """[0, 1] RGB -> the student's input ((x - mean) / std with its image processor's mean and std)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in student_normalization(settings))
    return lambda x: (x - mean) / std


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, teacher_mean: torch.Tensor, settings: RealBaseSettings
) -> dict[str, Any]:
    """Cosine to the teacher's centred descriptor, plus agreement of the in-batch cosine-similarity matrices.

    dlib's descriptors share a large common component (random faces have cosine ~0.85), so a student that outputs
    that constant would already score cosine 0.92; centring on the teacher's mean over the base images leaves only
    what tells faces apart.
    """
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float() - teacher_mean, dim=-1)
    cosine = (1 - (s * t).sum(-1)).mean()
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    relational = F.mse_loss((s @ s.T)[off], (t @ t.T)[off])
    total = settings.cosine_weight * cosine + settings.relational_weight * relational
    return {"loss": total, "cosine": cosine.detach(), "relational": relational.detach()}


@torch.no_grad()
def embed(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Flip-fused unit embeddings (the project's protocol) of float images [N, 3, S, S]."""
    from petal_peft.evaluation.metrics import fuse_flip

    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        out.append(fuse_flip(fn(x).float(), fn(torch.flip(x, dims=[-1])).float())[0])
    return torch.cat(out)


def verification_accuracy(embeddings: torch.Tensor, pairs: np.ndarray) -> dict[str, float]:
    """10-fold verification (petal_peft.evaluation) on pairs [P, 3] = (index a, index b, same)."""
    from petal_peft.evaluation.metrics import kfold_verification_accuracy, roc_auc, roc_curve, squared_l2

    d = squared_l2(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
    same = pairs[:, 2].astype(bool)
    out = kfold_verification_accuracy(d, same, n_folds=10).metrics()
    fpr, tpr, _ = roc_curve(same, -d)
    out["auc"] = 100.0 * roc_auc(fpr, tpr)
    return out


def student_embed_fn(model: torch.nn.Module, settings: RealBaseSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """ArcFace-crop float images (any size) -> the student's pooler_output, resized like the image processor."""
    size, normalize = settings.image_size, normalizer(settings)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return model(pixel_values=normalize(x)).pooler_output

    return fn


@torch.no_grad()
def teacher_descriptor_mean(
    teacher: torch.nn.Module, canvases: FaceCanvases, sampler: ViewSampler, max_images: int = 1024
) -> torch.Tensor:
    """The teacher's mean descriptor over (up to ``max_images`` evenly spaced) unaugmented base images."""
    idx = np.linspace(0, len(canvases.images) - 1, min(max_images, len(canvases.images))).round().astype(int)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    total = None
    for i in range(0, len(idx), 128):
        x = canvases.tensor(idx[i : i + 128])
        y = teacher(sampler.teacher_view(x, identity.expand(len(x), 2, 3))).sum(0)
        total = y if total is None else total + y
    return total / len(idx)


def _lr_at(step: int, s: RealBaseSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    canvases: FaceCanvases,
    settings: RealBaseSettings,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    progress: bool = True,
    teacher_mean: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """Function matching for ``settings.steps`` steps; returns the log (loss per 50 steps, and evaluations)."""
    s = settings
    gen = torch.Generator().manual_seed(s.seed)
    sampler = ViewSampler(s, canvases.margin)
    normalize = normalizer(s)
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in trainable:  # (stem?, decayed?): matrices decay, biases / norms / position embeddings do not
        decayed = p.dim() >= 2 and "position_embeddings" not in name and "cls_token" not in name
        groups.setdefault((".stem." in f".{name}", decayed), []).append(p)
    opt = torch.optim.AdamW(
        [
            {
                "params": ps,
                "weight_decay": s.weight_decay if decayed else 0.0,
                "lr_scale": s.stem_lr_scale if stem else 1.0,
            }
            for (stem, decayed), ps in sorted(groups.items())
        ],
        lr=s.lr,
        betas=(0.9, 0.999),
    )
    teacher.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # same function, ~1.4x faster here
    if teacher_mean is None:
        teacher_mean = teacher_descriptor_mean(teacher, canvases, sampler)
    log: list[dict[str, float]] = []
    n = len(canvases.images)
    order = torch.randperm(n, generator=gen)
    cursor, t0, window = 0, time.time(), []
    bar = tqdm(range(s.steps), desc="distilling", unit="step", disable=not progress)
    for step in bar:
        if cursor + s.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + s.batch_size].numpy()
        cursor += s.batch_size
        student_x, teacher_x = sampler.sample(canvases.tensor(np.sort(idx)), gen)
        with torch.no_grad():
            target = teacher(teacher_x.contiguous(memory_format=torch.channels_last))
        student.train()
        out = student(pixel_values=normalize(student_x)).pooler_output
        losses = distillation_loss(out, target, teacher_mean, s)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, s) * g["lr_scale"]
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], s.grad_clip)
        opt.step()
        window.append([float(losses[k].detach()) for k in ("loss", "cosine", "relational")])
        if (step + 1) % 50 == 0 or step + 1 == s.steps:
            mean = np.mean(window, axis=0)
            window = []
            log.append(
                {
                    "step": step + 1,
                    "loss": mean[0],
                    "cosine": mean[1],
                    "relational": mean[2],
                    "seconds": time.time() - t0,
                }
            )
            bar.set_postfix(loss=f"{mean[0]:.4f}", cos=f"{mean[1]:.4f}")
        if evaluate is not None and ((s.eval_every and (step + 1) % s.eval_every == 0) or step + 1 == s.steps):
            student.eval()
            metrics = evaluate(student)
            log.append({"step": step + 1, "seconds": time.time() - t0, **{f"eval_{k}": v for k, v in metrics.items()}})
            bar.write(f"step {step + 1}: eval accuracy {metrics['accuracy']:.2f} % ({time.time() - t0:.0f} s)")
    student.eval()
    return log


# ------------------------------------------------------------------------------------------------------------
# The whole build
# ------------------------------------------------------------------------------------------------------------

#: the terms that travel with the weights (written into every built folder)
NOTICE = """These weights were learned from face photographs that are licensed for research use only.

- LFW (Labeled Faces in the Wild; G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, UMass TR 07-49, 2007):
  View-2 folds 6-9. LFW publishes no licence; its photos are news pictures whose copyright stays with their owners.
- Glint360K: celebrities not named in LFW folds 0-5. Distributed for non-commercial research; web photos of
  public figures.

Use these weights for research measurements only. No photo, and no image derived from one, is included here.
The identities whose photos were used are listed in base_identities.json.

The teacher, dlib's dlib_face_recognition_resnet_model_v1 (Davis King), is in the public domain / CC0 1.0
Universal (as the face_recognition_models package states); part of the stem is copied from it.
"""

#: the files of a built base folder besides config.json / model.safetensors / preprocessor_config.json
RECORD_NAME = "build_record.json"
IDENTITIES_NAME = "base_identities.json"


@contextmanager
def _deterministic(threads: int):
    prev = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1])


def _pair_indices(pairs: Sequence[Any], images: list[str]) -> np.ndarray:
    where = {p: i for i, p in enumerate(images)}
    return np.array([[where[p.first], where[p.second], int(p.same)] for p in pairs], dtype=np.int64)


def balanced_order(pairs: np.ndarray) -> np.ndarray:
    """Same and different pairs interleaved, so that each of the 10 contiguous folds holds both in equal numbers
    (LFW lists each official fold as 300 same, then 300 different pairs)."""
    same, diff = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    n = min(len(same), len(diff))
    return np.concatenate([np.stack([same[:n], diff[:n]], 1).reshape(-1, 3), same[n:], diff[n:]])


def _teacher_embed_fn(teacher: torch.nn.Module, sampler: ViewSampler) -> Callable[[torch.Tensor], torch.Tensor]:
    """ArcFace canvases -> teacher descriptors of dlib's chip cut from them (no augmentation)."""
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    return lambda x: teacher(sampler.teacher_view(x, identity.expand(len(x), 2, 3)))


def _crop(canvases: FaceCanvases) -> torch.Tensor:
    m = canvases.margin
    return canvases.tensor(slice(None))[:, :, m : m + 112, m : m + 112]


def _student_inputs(canvases: FaceCanvases, sampler: ViewSampler, settings: RealBaseSettings) -> torch.Tensor:
    """Unaugmented student inputs (before resizing) of aligned canvases: the ArcFace crop or dlib's chip."""
    if settings.student_template == "dlib":
        identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        parts = []
        for i in range(0, len(canvases.images), 256):
            x = canvases.tensor(np.arange(i, min(i + 256, len(canvases.images))))
            parts.append(sampler.teacher_view(x, identity.expand(len(x), 2, 3)))
        return torch.cat(parts)
    return _crop(canvases)


def _pair_metrics(embeddings: torch.Tensor, pairs: np.ndarray) -> dict[str, Any]:
    out = verification_accuracy(embeddings, pairs)
    out["balanced_order"] = verification_accuracy(embeddings, balanced_order(pairs))
    return out


def _aligned(paths: list[Path], margin: int, workers: int, cache: Path | None, desc: str) -> FaceCanvases:
    if cache is not None and cache.is_file():
        return FaceCanvases.load(cache)
    canvases = FaceCanvases.align(paths, margin=margin, workers=workers, desc=desc)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        canvases.save(cache)
    return canvases


def build_real_face_base(
    faces_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: RealBaseSettings | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the real-face base from ``faces_root`` (``lfw/`` and optionally ``glint_celeb24/``) into ``out_dir``.

    Uses only the base identity group of :func:`petal_peft.data.lfw.lfw_face_groups` (LFW folds 6-9 and the
    extra celebrities not named in folds 0-5); measures the student and the teacher on the View-2 pairs of the
    evaluation folds 0-2 (and the student's curve on the validation fold 3). ``cache_dir`` keeps the aligned
    images between runs (not inside ``out_dir``). Returns the build record (also written to the folder).
    """
    from petal_peft.data.lfw import lfw_face_groups
    from petal_peft.zoo.dlib_resnet import load_dlib_face_resnet

    s = settings or RealBaseSettings()
    faces_root, out_dir = Path(faces_root), Path(out_dir)
    lfw, glint = faces_root / "lfw", faces_root / "glint_celeb24"
    if not lfw.is_dir():
        raise FileNotFoundError(f"{faces_root}: no lfw/ folder (LFW View-2 images with pairs_view2.csv).")
    extra = [glint] if glint.is_dir() else []
    groups = lfw_face_groups(lfw, extra)
    started, timings = time.time(), {}
    cache = Path(cache_dir) if cache_dir is not None else None

    def cached(name: str) -> Path | None:
        return None if cache is None else cache / f"{name}_margin{s.canvas_margin}.npz"

    with _deterministic(s.threads):
        torch.manual_seed(s.seed)
        base_paths = [p for name in sorted(groups.base) for p in groups.base[name]]
        eval_images = sorted({p for pair in groups.eval_pairs for p in (pair.first, pair.second)})
        val_images = sorted({p for pair in groups.validation_pairs for p in (pair.first, pair.second)})
        base = _aligned(base_paths, s.canvas_margin, s.align_workers, cached("base"), "aligning base images")
        evals = _aligned([lfw / p for p in eval_images], s.canvas_margin, s.align_workers, cached("eval"), "eval")
        vals = _aligned([lfw / p for p in val_images], s.canvas_margin, s.align_workers, cached("val"), "validation")
        eval_pairs = _pair_indices(groups.eval_pairs, eval_images)
        val_pairs = balanced_order(_pair_indices(groups.validation_pairs, val_images))
        timings["align_s"] = time.time() - started

        t = time.time()
        teacher = load_dlib_face_resnet()
        sampler = ViewSampler(s, s.canvas_margin)
        teacher_fn = _teacher_embed_fn(teacher, sampler)
        teacher_metrics = _pair_metrics(embed(teacher_fn, evals.tensor(slice(None))), eval_pairs)
        timings["teacher_eval_s"] = time.time() - t

        student = build_student(s, teacher)
        val_x = _student_inputs(vals, sampler, s)

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            return verification_accuracy(embed(student_embed_fn(model, s), val_x), val_pairs)

        t = time.time()
        log = distill(student, teacher, base, s, evaluate=evaluate if s.eval_every else None, progress=progress)
        timings["distill_s"] = time.time() - t

        t = time.time()
        eval_x = _student_inputs(evals, sampler, s)
        student_metrics = _pair_metrics(embed(student_embed_fn(student, s), eval_x), eval_pairs)
        half = copy.deepcopy(student).half().float()  # what the fp16 file holds, read back as fp32
        fp16_metrics = _pair_metrics(embed(student_embed_fn(half, s), eval_x), eval_pairs)
        timings["student_eval_s"] = time.time() - t
    timings["total_s"] = time.time() - started

    record = {
        "settings": s.to_dict(),
        "data": {
            "faces_root": str(faces_root),
            "groups": {k: v for k, v in groups.summary().items() if k != "base_identities"},
            "base_images": len(base_paths),
            "no_face_found": {
                "base": sum(m != "detected" for m in base.methods),
                "eval": sum(m != "detected" for m in evals.methods),
            },
        },
        "metrics": {
            "data": "LFW View-2 pairs of folds 0-2 (1,800 pairs; identities unseen by the base), 10-fold, "
            "flip-fused unit embeddings, squared L2",
            "student": student_metrics,
            "student_fp16_weights": fp16_metrics,
            "teacher_dlib_resnet_torch": teacher_metrics,
        },
        "timings": timings,
        "torch_threads": s.threads,
        "log": log,
    }
    save_real_face_base(student, s, out_dir, record, groups.summary())
    return record


def save_real_face_base(
    model: torch.nn.Module,
    settings: RealBaseSettings,
    out_dir: str | os.PathLike,
    record: dict[str, Any],
    groups_summary: dict[str, Any],
) -> Path:
    """Write the folder atomically: config, fp16 safetensors, image processor, model card, identities, record."""
    from safetensors.torch import save_file
    from transformers import ViTImageProcessorPil

    from petal_peft.files import atomic_directory

    out_dir = Path(out_dir)
    mean, std = student_normalization(settings)
    with atomic_directory(out_dir) as tmp:
        # fp16 weights halve the file; config.dtype float32 makes AutoModel read them back as fp32
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = copy.deepcopy(model.config)
        config.dtype = "float32"
        config.architectures = [type(model).__name__]
        config.save_pretrained(tmp)
        ViTImageProcessorPil(
            do_resize=True,
            size={"height": settings.image_size, "width": settings.image_size},
            image_mean=list(mean),
            image_std=list(std),
        ).save_pretrained(tmp)
        identities = {
            "description": "identities whose photos built this base (LFW View-2 folds 6-9 and Glint360K "
            "celebrities not named in LFW folds 0-5); keep them out of adaptation and evaluation",
            "folds": groups_summary["folds"],
            "dropped_extra_identities": groups_summary["dropped_extra_identities"],
            "identities": groups_summary["base_identities"],
        }
        (tmp / IDENTITIES_NAME).write_text(json.dumps(identities, indent=1) + "\n")
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
        (tmp / "README.md").write_text(model_card(settings, record))
        (tmp / "NOTICE").write_text(NOTICE)
    return out_dir


def _pct(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.2f} ± {m['accuracy_std']:.2f}"


def model_card(settings: RealBaseSettings, record: dict[str, Any]) -> str:
    """The README.md of a built base: what it is, its data and their terms, the teacher, the recipe, its accuracy."""
    s, m, t = settings, record["metrics"], record["timings"]
    groups = record["data"]["groups"]
    if s.architecture == "conv_vit":
        arch = (
            f"`FaceConvViTModel` (petal-peft; `import petal_peft` registers it with `AutoModel`): a residual conv "
            f"stem copied from the teacher's first {s.stem_units} residual units"
            f"{' (kept frozen while distilling)' if s.freeze_stem else ''}, whose feature-map cells become "
            f"tokens for {s.num_layers} pre-norm transformer layers (width {s.hidden_size}, {s.num_heads} heads, "
            f"attention `q_proj`/`k_proj`/`v_proj`/`o_proj`); the embedding is `pooler.dense` of the mean token"
        )
    else:
        arch = (
            f"plain transformers `ViTModel` ({s.num_layers} layers, width {s.hidden_size}, {s.num_heads} heads, "
            f"{s.patch_size} px patches); the embedding is `pooler_output`, a linear map of the CLS token"
        )
    framing = "the ArcFace 112x112 crop" if s.student_template == "arcface" else "dlib's 150x150 face chip"
    rows = [
        ("this base (fp16 file, as loaded)", m["student_fp16_weights"]),
        ("this base (fp32, before saving)", m["student"]),
        ("teacher: dlib ResNet (our torch port, same alignment)", m["teacher_dlib_resnet_torch"]),
    ]
    table = "\n".join(f"| {name} | {_pct(x)} | {_pct(x['balanced_order'])} | {x['auc']:.2f} |" for name, x in rows)
    return f"""# petal-peft real-face base: a face transformer distilled from dlib's ResNet

A {arch}. Input: {framing} of a face aligned with petal-peft's aligner (`petal_peft.align.FaceAligner()` or
`petal-peft align SRC DST`: dlib's detector and 5 landmarks, similarity warp), resized by the image processor to
{s.image_size}x{s.image_size}. Output: a {s.embedding_dim}-d embedding (`pooler_output`); compare faces by cosine.

```python
import petal_peft  # registers petal-peft's architectures with AutoModel
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("path/to/this/folder").eval()
processor = AutoImageProcessor.from_pretrained("path/to/this/folder")
# embedding = model(**processor(aligned_images, return_tensors="pt")).pooler_output
```

## Accuracy (real faces)

LFW View-2 pairs of folds 0-2 (1,800 pairs of people this base never saw), 10-fold verification accuracy (%) of
flip-fused unit embeddings by squared L2 distance (petal-peft's verification protocol), measured in the build:

| model | 10-fold accuracy, pairs in LFW's order | pairs interleaved (balanced folds) | AUC |
|---|---|---|---|
{table}

In LFW's order each official fold lists its 300 same-person pairs before its 300 different-person pairs, so some
of the ten contiguous folds hold one kind only; interleaving balances them. dlib's own pipeline (its chip
extraction, raw descriptors, Euclidean threshold) scores 98.8 % on all ten LFW folds.

## Data and terms

- **Photos**: the base identity group of `petal_peft.data.lfw.lfw_face_groups`: LFW View-2 folds 6-9 plus the
  Glint360K celebrities not named in LFW folds 0-5 ({groups["base"]["identities"]} identities,
  {groups["base"]["images"]} images); no labels were used. The identities are listed in `base_identities.json`;
  keep them out of adaptation and evaluation groups (LFW folds 0-2 evaluate, 3 validates, 4-5 adapt).
- **Terms: research use only.** LFW (G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the
  Wild", UMass TR 07-49, 2007) publishes no licence; its photos are news pictures whose copyright stays with their
  owners. Glint360K is distributed for non-commercial research; its photos are web photos of public figures.
  These weights were learned from those photos: use them for research measurements only.
- **Teacher**: dlib's `dlib_face_recognition_resnet_model_v1` (Davis King), public domain / CC0 1.0 Universal as
  the `face_recognition_models` package states; run in torch by `petal_peft.zoo.dlib_resnet`.

## Recipe

Function matching (Beyer et al., CVPR 2022): every step, teacher and student see the same freshly augmented view
of a batch of {s.batch_size} base photos (random similarity warp: scale {s.scale_range[0]}-{s.scale_range[1]},
rotation ±{s.max_rotation_deg:g}°, shift ±{s.max_shift:g} px; mirror p={s.flip_prob}; brightness / contrast /
saturation ±{s.colour_jitter:g}; grey p={s.grey_prob}; mixup of two photos with weight ~ U(0, 1) for a share
{s.mixup_prob} of the batch). The teacher sees dlib's 150 px chip, the student {framing}, both cut from the same
augmented image. Loss: cosine distance to the teacher's descriptor centred on its mean over the base photos
(weight {s.cosine_weight}) plus the mean squared difference of the in-batch cosine-similarity matrices
(weight {s.relational_weight}). AdamW, lr {s.lr:g} ({s.warmup_steps} warmup steps, cosine decay to
{s.min_lr_ratio:g}x), weight decay {s.weight_decay:g}, gradient clip {s.grad_clip:g}, {s.steps} steps, seed {s.seed},
{s.threads} torch threads. Every setting: `build_record.json`.

Build: `python benchmarks/real_faces.py build-base --faces DIR --out DIR` ({t["total_s"] / 60:.1f} min wall on the build
machine: alignment {t["align_s"]:.0f} s, teacher evaluation {t["teacher_eval_s"]:.0f} s, distillation
{t["distill_s"]:.0f} s). The same machine, torch build and thread count reproduce it.
"""
