"""Procedural synthetic identities: the pretraining data for the embedded base model.

These are NOT faces and must never be reported as faces. No identity-labelled real face set large enough to
pretrain a recogniser ships in any package registry this project can reach (see docs/real_faces.md), so the
small base ViT learns identity-discriminative embeddings on drawn, face-like glyphs instead: each identity is
a fixed set of shape, colour and texture parameters (head outline, hair, eye spacing, nose, mouth, a
low-frequency skin pattern), and each image of it varies pose, scale, lighting, expression, blinking,
background and sensor noise. That teaches the backbone what identity-vs-nuisance variation looks like so the
base is measurably better than random init; real faces (where available) are kept for evaluation.

Rendering is vectorised in torch and fully determined by (seed, identity index, image index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SyntheticIdentities"]

# Per-identity parameter names and (low, high) ranges, drawn uniformly.
_IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "head_w": (0.50, 0.72),
    "head_h": (0.66, 0.86),
    "skin_r": (0.40, 0.98),
    "skin_g": (0.55, 0.85),  # stored as a fraction of skin_r: skin tones stay plausible
    "skin_b": (0.60, 0.92),  # fraction of skin_g
    "hair_r": (0.02, 0.75),
    "hair_g": (0.02, 0.55),
    "hair_b": (0.02, 0.45),
    "hairline": (-0.55, -0.20),
    "hair_volume": (1.00, 1.25),
    "eye_dx": (0.16, 0.30),
    "eye_y": (-0.18, 0.02),
    "eye_r": (0.05, 0.10),
    "iris_r": (0.05, 0.55),
    "iris_g": (0.05, 0.55),
    "iris_b": (0.05, 0.65),
    "brow_tilt": (-0.35, 0.35),
    "brow_thick": (0.015, 0.045),
    "nose_len": (0.10, 0.26),
    "nose_w": (0.04, 0.10),
    "mouth_y": (0.28, 0.46),
    "mouth_w": (0.12, 0.28),
    "mouth_curve": (-0.8, 1.2),
    "lip_r": (0.35, 0.85),
    "glasses": (0.0, 1.0),  # identity wears glasses when > 0.8
    "tex_fx1": (1.0, 4.0),
    "tex_fy1": (1.0, 4.0),
    "tex_ph1": (0.0, 2 * math.pi),
    "tex_fx2": (1.0, 4.0),
    "tex_fy2": (1.0, 4.0),
    "tex_ph2": (0.0, 2 * math.pi),
    "tex_amp": (0.03, 0.12),
}


def _soft(inside: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Anti-aliased mask from a signed 'inside' field (positive inside, roughly in normalised units)."""
    return torch.sigmoid(inside * sharpness)


@dataclass(frozen=True)
class SyntheticIdentities:
    """A fixed population of ``num_identities`` procedural identities rendered at ``image_size`` pixels."""

    num_identities: int
    image_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_identities < 1:
            raise ValueError(f"num_identities must be >= 1, got {self.num_identities}.")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}.")

    def identity_params(self) -> dict[str, torch.Tensor]:
        """Per-identity parameter table ``{name: [num_identities]}``; depends only on seed and count."""
        g = torch.Generator().manual_seed(self.seed)
        u = torch.rand(self.num_identities, len(_IDENTITY_RANGES), generator=g, dtype=torch.float64)
        out = {}
        for j, (name, (lo, hi)) in enumerate(_IDENTITY_RANGES.items()):
            out[name] = (lo + (hi - lo) * u[:, j]).float()
        out["skin_g"] = out["skin_r"] * out["skin_g"]
        out["skin_b"] = out["skin_g"] * out["skin_b"]
        return out

    def render(self, identities: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """Render float images ``[B, 3, H, W]`` in [0, 1] for identity indices and per-identity image indices.

        The nuisance variation of image ``(i, n)`` is seeded by ``(seed, i, n)`` alone, so any image can be
        regenerated on its own and batches are reproducible regardless of how they are grouped.
        """
        identities = torch.as_tensor(identities, dtype=torch.long).reshape(-1)
        image_ids = torch.as_tensor(image_ids, dtype=torch.long).reshape(-1)
        if identities.shape != image_ids.shape:
            raise ValueError(
                f"identities and image_ids must have the same length, got {identities.numel()} and {image_ids.numel()}."
            )
        if identities.numel() and (int(identities.min()) < 0 or int(identities.max()) >= self.num_identities):
            raise ValueError(f"identity indices must be in [0, {self.num_identities}).")
        table = self.identity_params()
        p = {k: v[identities] for k, v in table.items()}
        nuis = self._nuisance(identities, image_ids)
        return self._draw(p, nuis)

    # ------------------------------------------------------------------------------------------------------
    def _nuisance(self, identities: torch.Tensor, image_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        b = identities.numel()
        size = self.image_size
        rows, noise = [], []
        for i, n in zip(identities.tolist(), image_ids.tolist()):
            # Distinct stream per (seed, identity, image): a simple injective mix into a 63-bit seed.
            key = (self.seed * 1_000_003 + i) * 1_000_033 + n + 0x5EED
            g = torch.Generator().manual_seed(key % (2**63 - 1))
            rows.append(torch.rand(17, generator=g, dtype=torch.float64))
            noise.append(torch.randn(3, size, size, generator=g))
        u = torch.stack(rows).float() if b else torch.zeros(0, 17)
        noise_field = torch.stack(noise) if b else torch.zeros(0, 3, size, size)
        return {
            "angle": (u[:, 0] - 0.5) * math.radians(24.0),
            "scale": 0.88 + 0.24 * u[:, 1],
            "dx": (u[:, 2] - 0.5) * 0.16,
            "dy": (u[:, 3] - 0.5) * 0.16,
            "light_dir": u[:, 4] * 2 * math.pi,
            "light_amp": 0.05 + 0.30 * u[:, 5],
            "brightness": 0.75 + 0.45 * u[:, 6],
            "expression": (u[:, 7] - 0.5) * 1.2,
            "blink": (u[:, 8] > 0.85).float() * (0.6 + 0.3 * u[:, 9]),
            "bg_r": u[:, 10],
            "bg_g": u[:, 11],
            "bg_b": u[:, 12],
            "noise": 0.005 + 0.02 * u[:, 13],
            "noise_field": noise_field,
            "glasses_off": (u[:, 15] > 0.85).float(),
            "gray": (u[:, 16] > 0.7).float(),
        }

    def _draw(self, p: dict[str, torch.Tensor], q: dict[str, torch.Tensor]) -> torch.Tensor:
        b, size = p["head_w"].shape[0], self.image_size
        lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        yy, xx = yy.expand(b, size, size), xx.expand(b, size, size)

        def col(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, 1, 1)

        # Inverse pose: map image coordinates into the identity's canonical frame.
        cos, sin = col(torch.cos(q["angle"])), col(torch.sin(q["angle"]))
        x0, y0 = xx - col(q["dx"]), yy - col(q["dy"])
        x = (cos * x0 + sin * y0) / col(q["scale"])
        y = (-sin * x0 + cos * y0) / col(q["scale"])
        sharp = size / 1.5  # edge softness ~ 1.5 px

        def ellipse(cx, cy, ax, ay):
            r = torch.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + 1e-12)
            return _soft((1 - r) * torch.minimum(ax, ay), sharp)

        bg = torch.stack([col(q["bg_r"]), col(q["bg_g"]), col(q["bg_b"])], 1).expand(b, 3, size, size)
        img = bg * (0.6 + 0.4 * (yy.unsqueeze(1) + 1) / 2)

        def paint(mask: torch.Tensor, rgb: torch.Tensor) -> None:
            nonlocal img
            m = mask.unsqueeze(1)
            img = img * (1 - m) + rgb * m

        zero = torch.zeros(b, 1, 1)
        hw, hh = col(p["head_w"]), col(p["head_h"])
        hair_rgb = torch.stack([col(p["hair_r"]), col(p["hair_g"]), col(p["hair_b"])], 1)
        vol = col(p["hair_volume"])
        hair_mask = ellipse(zero, zero - 0.05, hw * vol, hh * vol) * _soft(col(p["hairline"]) + 0.25 - y, sharp)
        paint(hair_mask, hair_rgb)

        skin = torch.stack([col(p["skin_r"]), col(p["skin_g"]), col(p["skin_b"])], 1)
        tex = col(p["tex_amp"]) * (
            torch.sin(col(p["tex_fx1"]) * math.pi * x + col(p["tex_fy1"]) * math.pi * y + col(p["tex_ph1"]))
            + torch.sin(col(p["tex_fx2"]) * math.pi * x - col(p["tex_fy2"]) * math.pi * y + col(p["tex_ph2"]))
        )
        face = ellipse(zero, zero + 0.05, hw, hh) * _soft(y - col(p["hairline"]), sharp)
        paint(face, (skin * (1 + tex.unsqueeze(1))).clamp(0, 1))

        ex, ey, er = col(p["eye_dx"]), col(p["eye_y"]), col(p["eye_r"])
        open_h = er * 0.7 * (1 - col(q["blink"]))
        iris = torch.stack([col(p["iris_r"]), col(p["iris_g"]), col(p["iris_b"])], 1)
        white = torch.full((b, 3, 1, 1), 0.95)
        for side in (-1.0, 1.0):
            sclera = ellipse(side * ex, ey, er * 1.3, open_h + 0.01)
            paint(sclera, white)
            paint(ellipse(side * ex, ey, er * 0.6, torch.minimum(er * 0.6, open_h + 0.01)) * sclera, iris)
            brow_y = ey - er * 1.6 - side * col(p["brow_tilt"]) * (x - side * ex)
            brow = _soft(col(p["brow_thick"]) - (y - brow_y).abs(), sharp) * _soft(
                er * 1.6 - (x - side * ex).abs(), sharp
            )
            paint(brow * face, hair_rgb * 0.8)
            glasses = (col(p["glasses"]) > 0.8).float() * (1 - col(q["glasses_off"]))
            ring = ellipse(side * ex, ey, er * 2.0, er * 1.6) - ellipse(side * ex, ey, er * 1.7, er * 1.3)
            paint(ring.clamp(0, 1) * glasses, torch.full((b, 3, 1, 1), 0.08))

        nl, nw = col(p["nose_len"]), col(p["nose_w"])
        nose_t = ((y - ey) / nl).clamp(0, 1)
        nose = _soft(nw * nose_t - x.abs(), sharp) * _soft(y - ey, sharp) * _soft(ey + nl - y, sharp)
        paint(nose * 0.6, skin * 0.7)

        curve = col(p["mouth_curve"]) + col(q["expression"])
        my, mw = col(p["mouth_y"]), col(p["mouth_w"])
        lip_y = my - curve * 0.15 * (x / mw) ** 2
        lips = _soft(0.025 - (y - lip_y).abs(), sharp) * _soft(mw - x.abs(), sharp)
        lip_rgb = torch.stack([col(p["lip_r"]), col(p["skin_g"]) * 0.6, col(p["skin_b"]) * 0.6], 1)
        paint(lips, lip_rgb)

        # Lighting: directional gradient times global brightness, then sensor noise.
        ld = col(q["light_dir"])
        light = col(q["brightness"]) * (1 + col(q["light_amp"]) * (torch.cos(ld) * xx + torch.sin(ld) * yy))
        img = img * light.unsqueeze(1)
        img = img + q["noise_field"] * q["noise"].view(b, 1, 1, 1)
        # Some images in grey (as many real face sets are), so colour alone cannot carry identity.
        luma = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]).unsqueeze(1).expand_as(img)
        gray = q["gray"].view(b, 1, 1, 1)
        img = img * (1 - gray) + luma * gray
        return img.clamp(0, 1)
