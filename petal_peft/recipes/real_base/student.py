"""The student network, the distillation loss and the embedding / verification helpers of the build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from petal_peft.recipes.real_base.settings import RealBaseSettings
from petal_peft.recipes.real_base.views import FaceCanvases, ViewSampler

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
def flip_fused_embeddings(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 128
) -> torch.Tensor:
    """Flip-fused unit embeddings (the project's protocol) of float images [N, 3, S, S]."""
    from petal_peft.embedding.vectors import fuse_flip

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
