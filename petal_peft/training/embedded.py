"""Data for the embedded default run: a small real-face set split by identity into adapt and eval folders.

The adapt identities become an identity-per-subfolder training folder; the eval identities a TinyFace-style
folder whose probes are made low-resolution (seeded LowResolutionDegradation) while the gallery stays sharp,
which is the situation the quality gate is for. Built once into the petal-peft cache and reused.

The real faces are the Olivetti/AT&T set (see petal_peft.data.real_faces). Where it is not on the machine,
the run falls back to procedural synthetic identities and says so: the adapt identities come from the *adapt*
group and the eval identities from the *eval* group of ``synthetic_identity_groups()``, both disjoint from the
identities the base was pretrained on and from each other. Those are not faces, and results on them must not
be reported as face results.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..files import atomic_directory

__all__ = ["EmbeddedData", "prepare_embedded_data"]

logger = logging.getLogger(__name__)

EMBEDDED_DATA_VERSION = 2
#: Probes of the embedded eval split are shrunk to this short-side range (TinyFace faces are ~20 px).
PROBE_MIN_SIZE, PROBE_MAX_SIZE = 10, 20
#: identities taken from each of the adapt and eval synthetic groups, and images rendered per identity
SYNTHETIC_IDENTITIES, SYNTHETIC_IMAGES = 20, 10


@dataclass
class EmbeddedData:
    train_dir: str
    eval_dir: str
    description: str
    real_faces: bool


def _samples(image_size: int):
    """(samples, description, real?, split or None) from the real-face set, else from unseen synthetic
    identities (already split: adapt group and eval group of ``synthetic_identity_groups()``)."""
    from ..data.real_faces import FaceSample, IdentitySplit, RealFacesUnavailableError, load_real_faces

    try:
        return load_real_faces("olivetti"), "Olivetti/AT&T faces (real, 40 people)", True, None
    except RealFacesUnavailableError as err:
        logger.warning("%s", err)
    import torch

    from ..recipes.synthetic_base import synthetic_identity_groups

    groups = synthetic_identity_groups()
    population = groups.population(image_size)
    adapt = list(groups.adapt[:SYNTHETIC_IDENTITIES])
    evaluation = list(groups.eval[:SYNTHETIC_IDENTITIES])
    ids = torch.tensor(adapt + evaluation).repeat_interleave(SYNTHETIC_IMAGES)
    image_ids = torch.arange(SYNTHETIC_IMAGES).repeat(len(adapt) + len(evaluation))
    pixels = (population.render(ids, image_ids).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    samples = [FaceSample(Image.fromarray(p, "RGB"), f"synth{int(i)}") for p, i in zip(pixels, ids)]
    split = IdentitySplit((), tuple(f"synth{i}" for i in adapt), tuple(f"synth{i}" for i in evaluation))
    description = (
        "procedural synthetic identities (NOT faces: the real-face set is not installed), adapt and eval groups "
        "the base never saw"
    )
    return samples, description, False, split


def prepare_embedded_data(cache_root: str | os.PathLike, image_size: int, seed: int = 0) -> EmbeddedData:
    """Write (once) ``<cache_root>/embedded-data-v1-s<seed>/{adapt,eval}`` and return their paths."""
    from ..data import LowResolutionDegradation
    from ..data.real_faces import split_identities, write_eval_folders, write_train_folder

    root = Path(cache_root) / f"embedded-data-v{EMBEDDED_DATA_VERSION}-s{seed}-{image_size}px"
    info_file = root / "SOURCE.txt"
    if not info_file.is_file():
        samples, description, real, split = _samples(image_size)
        with atomic_directory(root) as tmp:
            if split is None:
                split = split_identities([s.identity for s in samples], seed=seed)
            write_train_folder(samples, tmp / "adapt", identities=split.adapt)
            write_eval_folders(samples, tmp / "eval", identities=split.eval, seed=seed)
            probe_dir = tmp / "eval" / "Probe"
            degrade = LowResolutionDegradation(min_size=PROBE_MIN_SIZE, max_size=PROBE_MAX_SIZE, seed=seed)
            for index, path in enumerate(sorted(probe_dir.iterdir())):
                with Image.open(path) as img:
                    low = degrade.degrade(img.convert("RGB"), index=index).image
                low.save(path, format="PNG")
            (tmp / "SOURCE.txt").write_text(f"{'real' if real else 'synthetic'}\n{description}\n")
    kind, description = info_file.read_text().splitlines()[:2]
    return EmbeddedData(str(root / "adapt"), str(root / "eval"), description, kind == "real")
