"""The whole real-face base build: align, distill, measure and write the folder (see the package docstring)."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petal_peft.recipes.common import deterministic
from petal_peft.recipes.real_base.card import NOTICE, model_card
from petal_peft.recipes.real_base.loop import distill
from petal_peft.recipes.real_base.settings import RealBaseSettings
from petal_peft.recipes.real_base.student import (
    build_student,
    flip_fused_embeddings,
    student_embed_fn,
    student_normalization,
    verification_accuracy,
)
from petal_peft.recipes.real_base.views import FaceCanvases, ViewSampler

__all__ = ["IDENTITIES_NAME", "RECORD_NAME", "balanced_order", "build_real_face_base", "save_real_face_base"]

#: the files of a built base folder besides config.json / model.safetensors / preprocessor_config.json
RECORD_NAME = "build_record.json"
IDENTITIES_NAME = "base_identities.json"


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
    from petal_peft.convert.dlib_resnet import load_dlib_face_resnet
    from petal_peft.data.lfw import lfw_face_groups

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

    with deterministic(s.threads):
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
        teacher_metrics = _pair_metrics(flip_fused_embeddings(teacher_fn, evals.tensor(slice(None))), eval_pairs)
        timings["teacher_eval_s"] = time.time() - t

        student = build_student(s, teacher)
        val_x = _student_inputs(vals, sampler, s)

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            return verification_accuracy(flip_fused_embeddings(student_embed_fn(model, s), val_x), val_pairs)

        t = time.time()
        log = distill(student, teacher, base, s, evaluate=evaluate if s.eval_every else None, progress=progress)
        timings["distill_s"] = time.time() - t

        t = time.time()
        eval_x = _student_inputs(evals, sampler, s)
        student_metrics = _pair_metrics(flip_fused_embeddings(student_embed_fn(student, s), eval_x), eval_pairs)
        half = copy.deepcopy(student).half().float()  # what the fp16 file holds, read back as fp32
        fp16_metrics = _pair_metrics(flip_fused_embeddings(student_embed_fn(half, s), eval_x), eval_pairs)
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
