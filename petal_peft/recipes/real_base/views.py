"""Aligned face canvases and the function-matching views: one augmented warp, cut for student and teacher."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from petal_peft.recipes.real_base.settings import RealBaseSettings


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
