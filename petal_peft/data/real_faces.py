"""Real, identity-labelled face photographs: loading, identity splits, and TinyFace-style folders.

Where they come from: no identity-labelled face set with several images per person ships in a package of
PyPI, Debian or npm that this project can reach (docs/real_faces.md lists what was checked). So the loader
reads sets that a user obtains once and keeps locally:

- ``"olivetti"``: the Olivetti / AT&T (ORL) faces, 40 people x 10 grey 64x64 images, from scikit-learn's
  cache (``sklearn.datasets.fetch_olivetti_faces`` run once on a machine with internet; it is never
  downloaded here), or from ``$PETAL_PEFT_OLIVETTI`` pointing at that cache folder.
- ``"folder"``: any ``root/<identity>/<image>`` tree (every type of ``petal_peft.images``), e.g. the AT&T
  ``att_faces/s1/1.pgm`` layout.

Grey images become 3-channel RGB. Identity splits are by person, never by image, so the pretrain, adapt
and eval groups share nobody.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from petal_peft.files import atomic_directory
from petal_peft.images import IMAGE_EXTENSIONS, read_image

__all__ = [
    "IMAGE_SUFFIXES",
    "FaceSample",
    "IdentitySplit",
    "RealFacesUnavailableError",
    "group_by_identity",
    "load_folder_faces",
    "load_olivetti_faces",
    "load_real_faces",
    "split_identities",
    "write_eval_folders",
    "write_train_folder",
]

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # one list of image types for every command

OLIVETTI_HOWTO = (
    "The Olivetti/AT&T faces are not in any package registry reachable offline. On a machine with internet "
    "run once:\n"
    "    pip install scikit-learn\n"
    "    python -c \"from sklearn.datasets import fetch_olivetti_faces; fetch_olivetti_faces(data_home='DIR')\"\n"
    "then copy DIR here and pass data_home='DIR' (or set PETAL_PEFT_OLIVETTI=DIR). Any folder of "
    "root/<identity>/<image> files also works: load_real_faces('folder', root=...)."
)


class RealFacesUnavailableError(FileNotFoundError):
    """The requested real face set is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class FaceSample:
    """One RGB face image and its identity label (a string without '_', as the TinyFace layout needs)."""

    image: Image.Image
    identity: str


@dataclass(frozen=True)
class IdentitySplit:
    """Three disjoint, sorted identity groups."""

    pretrain: tuple[str, ...]
    adapt: tuple[str, ...]
    eval: tuple[str, ...]

    def group(self, name: str) -> tuple[str, ...]:
        if name not in ("pretrain", "adapt", "eval"):
            raise ValueError(f"group must be 'pretrain', 'adapt' or 'eval', got {name!r}.")
        return getattr(self, name)


def _to_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB") if img.mode != "RGB" else img


def _check_identity(identity: str) -> str:
    identity = str(identity)
    if not identity or "_" in identity or "/" in identity or identity in (".", ".."):
        raise ValueError(
            f"identity {identity!r} cannot be a file-name prefix: it must be non-empty and contain no '_' or '/'."
        )
    return identity


def load_folder_faces(root: str | os.PathLike) -> list[FaceSample]:
    """Read ``root/<identity>/<image>``; identities and files in sorted order so the result is deterministic."""
    root = Path(root)
    if not root.is_dir():
        raise RealFacesUnavailableError(f"face folder {root} does not exist. {OLIVETTI_HOWTO}")
    samples = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        identity = _check_identity(person.name.replace("_", "-"))
        for f in sorted(person.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(FaceSample(read_image(f), identity))
    if not samples:
        raise RealFacesUnavailableError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<identity>/.")
    return samples


def load_olivetti_faces(data_home: str | os.PathLike | None = None) -> list[FaceSample]:
    """The 400 Olivetti faces (40 identities ``olivetti-s01``..``s40``) from a local scikit-learn cache."""
    try:
        from sklearn.datasets import fetch_olivetti_faces
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RealFacesUnavailableError(f"scikit-learn is needed to read the Olivetti cache. {OLIVETTI_HOWTO}") from err
    data_home = data_home if data_home is not None else os.environ.get("PETAL_PEFT_OLIVETTI")
    try:
        bunch = fetch_olivetti_faces(data_home=data_home, download_if_missing=False)
    except OSError as err:
        raise RealFacesUnavailableError(
            f"Olivetti faces not found (data_home={data_home!r}). {OLIVETTI_HOWTO}"
        ) from err
    images = np.clip(np.rint(np.asarray(bunch.images) * 255.0), 0, 255).astype(np.uint8)
    return [
        FaceSample(_to_rgb(Image.fromarray(img, mode="L")), f"olivetti-s{int(t) + 1:02d}")
        for img, t in zip(images, bunch.target)
    ]


def load_real_faces(source: str = "olivetti", **kwargs) -> list[FaceSample]:
    """Load a real face set by name: ``"olivetti"`` (kwargs: data_home) or ``"folder"`` (kwargs: root)."""
    if source == "olivetti":
        return load_olivetti_faces(**kwargs)
    if source == "folder":
        return load_folder_faces(**kwargs)
    raise ValueError(f"unknown real-face source {source!r}; expected 'olivetti' or 'folder'.")


def group_by_identity(samples: Sequence[FaceSample]) -> dict[str, list[Image.Image]]:
    """``{identity: [images in input order]}`` with identities sorted."""
    out: dict[str, list[Image.Image]] = {}
    for s in samples:
        out.setdefault(s.identity, []).append(s.image)
    return dict(sorted(out.items()))


def split_identities(
    identities: Sequence[str], seed: int = 0, fractions: tuple[float, float, float] = (0.5, 0.25, 0.25)
) -> IdentitySplit:
    """Deterministic split of identities into disjoint pretrain / adapt / eval groups.

    The order of ``identities`` and duplicates do not matter: the unique names are sorted, then permuted by
    ``seed``. Each group with a positive fraction gets at least one identity.
    """
    names = sorted(set(map(str, identities)))
    if len(fractions) != 3 or any((not np.isfinite(f)) or f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers with a positive sum, got {fractions}.")
    need = sum(1 for f in fractions if f > 0)
    if len(names) < need:
        raise ValueError(f"need at least {need} identities for fractions {fractions}, got {len(names)}.")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = float(sum(fractions))
    counts = [int(round(len(names) * f / total)) if f > 0 else 0 for f in fractions]
    counts = [max(c, 1) if f > 0 else 0 for c, f in zip(counts, fractions)]
    # Fix rounding so counts add up to len(names): adjust the largest group.
    counts[int(np.argmax(counts))] += len(names) - sum(counts)
    a, b = counts[0], counts[0] + counts[1]
    return IdentitySplit(tuple(sorted(order[:a])), tuple(sorted(order[a:b])), tuple(sorted(order[b:])))


def _write_png(img: Image.Image, path: Path) -> None:
    _to_rgb(img).save(path, format="PNG")


def _refuse_non_empty(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; choose a new folder or delete it first.")


def write_train_folder(
    samples: Sequence[FaceSample], root: str | os.PathLike, identities: Sequence[str] | None = None
) -> Path:
    """Write ``root/<identity>/<n>.png`` for the given identities (default: all)."""
    root = Path(root)
    keep = None if identities is None else set(identities)
    _refuse_non_empty(root)
    with atomic_directory(root) as tmp:  # written fully, then renamed into place: never half a layout
        for identity, images in group_by_identity(samples).items():
            if keep is not None and identity not in keep:
                continue
            d = tmp / _check_identity(identity)
            d.mkdir()
            for n, img in enumerate(images):
                _write_png(img, d / f"{n}.png")
    return root


_FILE_RE = re.compile(r"^(?P<identity>[^_]+)_(?P<n>\d+)\.png$")


def write_eval_folders(
    samples: Sequence[FaceSample],
    root: str | os.PathLike,
    identities: Sequence[str] | None = None,
    distractor_fraction: float = 0.25,
    seed: int = 0,
) -> dict[str, int]:
    """Write a TinyFace-like evaluation layout under ``root``: ``Probe/``, ``Gallery_Match/`` and
    ``Gallery_Distractor/`` with files ``<identity>_<n>.png``.

    Of the given identities (default: all), a seeded ``distractor_fraction`` become distractor-only people
    (all their images in ``Gallery_Distractor``, none in ``Probe``); every other identity needs at least two
    images: one seeded image goes to ``Gallery_Match`` and the rest to ``Probe``. Returns file counts.
    """
    root = Path(root)
    if not 0.0 <= distractor_fraction < 1.0:
        raise ValueError(f"distractor_fraction must be in [0, 1), got {distractor_fraction}.")
    groups = group_by_identity(samples)
    if identities is not None:
        missing = sorted(set(identities) - set(groups))
        if missing:
            raise ValueError(f"identities not in samples: {missing[:5]}")
        groups = {k: v for k, v in groups.items() if k in set(identities)}
    names = sorted(groups)
    rng = np.random.default_rng(seed)
    n_distr = int(round(len(names) * distractor_fraction))
    perm = rng.permutation(len(names))
    distractors = {names[i] for i in perm[:n_distr]}
    mated = [n for n in names if n not in distractors]
    if not mated:
        raise ValueError("no probe identities left after choosing distractors.")
    for name in mated:
        if len(groups[name]) < 2:
            raise ValueError(f"identity {name!r} has {len(groups[name])} image(s); a probe identity needs >= 2.")
    _refuse_non_empty(root)
    counts = {"Probe": 0, "Gallery_Match": 0, "Gallery_Distractor": 0}
    with atomic_directory(root) as tmp:
        for sub in counts:
            (tmp / sub).mkdir()
        for name in names:
            _check_identity(name)
            images = groups[name]
            if name in distractors:
                for n, img in enumerate(images):
                    _write_png(img, tmp / "Gallery_Distractor" / f"{name}_{n}.png")
                    counts["Gallery_Distractor"] += 1
                continue
            g = int(rng.integers(len(images)))
            for n, img in enumerate(images):
                sub = "Gallery_Match" if n == g else "Probe"
                _write_png(img, tmp / sub / f"{name}_{n}.png")
                counts[sub] += 1
    return counts
