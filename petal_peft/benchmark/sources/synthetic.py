"""The synthetic-identity source: procedural face-like glyphs (NOT faces), the fast pipeline check.

Adapt, validation, eval and distractor identities come from ``synthetic_identity_groups()``, whose ranges
are disjoint from the shipped base's pretraining identities. Per identity: ``gallery_images`` sharp gallery
images, ``probe_images`` degraded probes, and ``verification_images`` further sharp images that make the
random 1:1 pairs. docs/benchmark.md has the protocol and a measured run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import (
    DATA_SOURCES,
    DISTRACTOR,
    BenchmarkData,
    EvalSplit,
    benchmark_data,
    degrade_images,
    random_verification_pairs,
    stack_images,
)
from ..settings import BenchmarkSettings

__all__ = ["SYNTHETIC_NOTE", "synthetic_source"]

SYNTHETIC_NOTE = "synthetic identities (not faces)"


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB")


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _render(s: BenchmarkSettings, image_size: int) -> tuple[dict[str, list[Image.Image]], dict[str, list[str]]]:
    from ...recipes.synthetic_base import synthetic_identity_groups

    groups = synthetic_identity_groups()
    need_adapt = s.adapt_identities + s.val_identities
    need_eval = s.eval_identities + s.distractor_identities
    if need_adapt > len(groups.adapt) or need_eval > len(groups.eval):
        raise ValueError(
            f"the synthetic adapt/eval groups hold {len(groups.adapt)}/{len(groups.eval)} identities; asked for "
            f"{need_adapt}/{need_eval}."
        )
    population = groups.population(image_size)
    adapt_ids = list(groups.adapt[: s.adapt_identities])
    val_ids = list(groups.adapt[s.adapt_identities : need_adapt])
    eval_ids = list(groups.eval[: s.eval_identities])
    distr_ids = list(groups.eval[s.eval_identities : need_eval])
    per_eval = s.gallery_images + s.probe_images + s.verification_images
    plan = [(i, s.adapt_images) for i in adapt_ids] + [(i, per_eval) for i in val_ids + eval_ids]
    plan += [(i, s.gallery_images) for i in distr_ids]
    out: dict[str, list[Image.Image]] = {}
    chunk = 64
    for start in tqdm(range(0, len(plan), chunk), desc="rendering synthetic identities", disable=not s.progress):
        part = plan[start : start + chunk]
        ids = torch.tensor([i for i, n in part for _ in range(n)])
        img_ids = torch.tensor([k for _, n in part for k in range(n)])
        pixels = _to_uint8(population.render(ids, img_ids))
        for ident, px in zip(ids.tolist(), pixels):
            out.setdefault(f"synth{ident}", []).append(_pil(px))
    names = {
        "adapt": [f"synth{i}" for i in adapt_ids],
        "val": [f"synth{i}" for i in val_ids],
        "eval": [f"synth{i}" for i in eval_ids],
        "distractors": [f"synth{i}" for i in distr_ids],
    }
    return out, names


def split_from_images(
    groups: dict[str, list[Image.Image]],
    mated: Sequence[str],
    distractors: Sequence[str],
    s: BenchmarkSettings,
    image_size: int,
    probe_sizes: tuple[int, int],
    seed: int,
    probes_per_identity: int | None,
) -> EvalSplit:
    """Gallery (first ``gallery_images`` of each identity, sharp), degraded probes, random sharp pairs.

    With ``probes_per_identity`` (synthetic identities) the probes are the next images and the pairs use the
    images after them; with None (a folder of real faces, few images each) every non-gallery image is a probe
    and the pairs are drawn among all images of the mated identities.
    """
    probes, probe_labels, gallery, gallery_labels, ver, ver_labels = [], [], [], [], [], []
    for k, name in enumerate(mated):
        imgs = groups[name]
        g = min(s.gallery_images, len(imgs) - 1)
        gallery += imgs[:g]
        gallery_labels += [k] * g
        mine = imgs[g:] if probes_per_identity is None else imgs[g : g + probes_per_identity]
        probes += mine
        probe_labels += [k] * len(mine)
        extra = imgs if probes_per_identity is None else imgs[g + probes_per_identity :]
        ver += extra
        ver_labels += [k] * len(extra)
    for name in distractors:
        imgs = groups[name][: s.gallery_images]
        gallery += imgs
        gallery_labels += [DISTRACTOR] * len(imgs)
    a, b, same = random_verification_pairs(np.asarray(ver_labels), s.verification_pairs, seed)
    sharp = torch.cat([stack_images(gallery, image_size), stack_images(ver, image_size)])
    return EvalSplit(
        probes=degrade_images(probes, probe_sizes, seed),
        probe_labels=np.asarray(probe_labels, dtype=np.int64),
        sharp=sharp,
        gallery_index=np.arange(len(gallery)),
        gallery_labels=np.asarray(gallery_labels, dtype=np.int64),
        pair_a=a + len(gallery),
        pair_b=b + len(gallery),
        same=same,
    )


def assemble(
    s: BenchmarkSettings,
    image_size: int,
    groups: dict[str, list[Image.Image]],
    names: dict[str, list[str]],
    probes_per_identity: int | None,
    **info: Any,
) -> BenchmarkData:
    """Adaptation set, gate-calibration images and the val/eval splits of identity groups held in memory."""
    for name, imgs in groups.items():
        groups[name] = [img.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC) for img in imgs]
    adapt = {k: groups[k] for k in names["adapt"]}
    probe_sizes = s.capture_sizes("probe", image_size)
    splits = {
        "val": split_from_images(groups, names["val"], [], s, image_size, probe_sizes, 11, probes_per_identity),
        "eval": split_from_images(
            groups, names["eval"], names["distractors"], s, image_size, probe_sizes, 22, probes_per_identity
        ),
    }
    summary = {
        "adapt": {"identities": len(adapt), "images": sum(len(v) for v in adapt.values())},
        **{k: v.counts() for k, v in splits.items()},
    }
    return benchmark_data(s, image_size, adapt, splits, summary=summary, **info)


@DATA_SOURCES.register("synthetic")
def synthetic_source(s: BenchmarkSettings, image_size: int) -> BenchmarkData:
    """Procedural synthetic identities at ``image_size`` (see the module docstring)."""
    groups, names = _render(s, image_size)
    return assemble(
        s,
        image_size,
        groups,
        names,
        s.probe_images,
        description=f"procedural {SYNTHETIC_NOTE}, adapt/eval groups disjoint from the base's pretraining group",
        real_faces=False,
        tag=SYNTHETIC_NOTE,
        terms="",
    )
