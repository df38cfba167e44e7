"""Every setting of a real-face base build (recorded in the built folder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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
