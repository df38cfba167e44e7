"""The real-face source: LFW View-2 folds as identity groups, extra sets (Glint360K celebrities) joined by name.

Groups (``petal_peft.data.lfw.lfw_face_groups``; the ten View-2 folds share no person): evaluation = folds
0-2, validation = fold 3, adaptation = folds 4-5, base = folds 6-9. An extra-set identity joins the group of
its LFW namesake's fold, is dropped when that is evaluation or validation, and joins the base group when it is
not an LFW name. The base model is built from the base group only; this source never reads it.

Per evaluation (and validation) group:

- identities with >= 2 images: their first image (in file order) is the sharp gallery entry, every other
  image a low-resolution probe (degraded at a TinyFace-like 12-24 px capture size, seeded);
- identities with one image: that image is a gallery distractor;
- 1:1 verification: the group's official View-2 pairs, sharp, dealt into ten folds of equal halves genuine
  and impostor (each fold takes a tenth of every View-2 fold's same and different pairs, in file order).

Adaptation: every image of the adaptation group's identities with >= ``adapt_min_images`` images.
Images are read from the folder the user names and prepared in memory; nothing is copied elsewhere except the
prepared adaptation images the trainer reads, under the run's own ``work/`` folder (deleted after the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...images import ImageReadError, read_image
from ..data import DATA_SOURCES, DISTRACTOR, BenchmarkData, EvalSplit, benchmark_data, degrade_images, stack_images
from ..prepare import IMAGE_PREPARATIONS, build_preparation
from ..settings import BenchmarkSettings

__all__ = [
    "REAL_FACE_TERMS",
    "RealFacePlan",
    "SplitPlan",
    "kfold_pair_order",
    "plan_real_faces",
    "real_faces_source",
    "resolve_face_roots",
]

REAL_FACE_TERMS = (
    "Real faces: LFW (news photographs, no licence; research use only; Huang et al., UMass TR 07-49, 2007) and "
    "Glint360K celebrities (non-commercial research use). Images are read from the user's folder, never copied."
)
PAIR_FILES = ("pairs_view2.csv", "pairs.txt")


def resolve_face_roots(faces: str | os.PathLike, extra_sets: Sequence[str]) -> tuple[Path, list[Path]]:
    """(LFW root, extra set roots) of a faces folder: ``faces/lfw`` (or ``faces`` itself) and ``faces/<set>``."""
    root = Path(faces)
    if not root.is_dir():
        raise FileNotFoundError(f"faces folder {root} does not exist (pass --faces, e.g. /path/to/shared/faces).")
    for candidate in (root / "lfw", root):
        if any((candidate / name).is_file() for name in PAIR_FILES):
            lfw = candidate
            break
    else:
        raise FileNotFoundError(
            f"{root}: no LFW View-2 pair list ({' or '.join(PAIR_FILES)}) in {root / 'lfw'} or {root}."
        )
    extras = [root / name for name in extra_sets if (root / name).is_dir() and root / name != lfw]
    return lfw, extras


def kfold_pair_order(pairs: Sequence[Any], n_folds: int = 10) -> list[Any]:
    """The pairs reordered into ``n_folds`` contiguous, equal-sized folds, each with a share of every View-2
    fold's genuine and impostor pairs (View-2 lists 300 same then 300 different pairs per fold; cut as is,
    some k-fold folds would hold only genuine pairs)."""
    chunks: list[list[Any]] = [[] for _ in range(n_folds)]
    for fold in sorted({p.fold for p in pairs}):
        for same in (True, False):
            members = [p for p in pairs if p.fold == fold and p.same == same]
            for i, pair in enumerate(members):
                chunks[i * n_folds // len(members)].append(pair)
    return [p for chunk in chunks for p in chunk]


@dataclass
class SplitPlan:
    """Paths and labels of one evaluation group (no pixels): probes, gallery, distractors, pairs."""

    identities: list[str] = field(default_factory=list)  # mated identities; label k is identities[k]
    distractors: list[str] = field(default_factory=list)
    probes: list[Path] = field(default_factory=list)
    probe_labels: list[int] = field(default_factory=list)
    sharp: list[Path] = field(default_factory=list)  # every sharp image once
    gallery_index: list[int] = field(default_factory=list)
    gallery_labels: list[int] = field(default_factory=list)
    pair_a: list[int] = field(default_factory=list)
    pair_b: list[int] = field(default_factory=list)
    same: list[bool] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "probes": len(self.probes),
            "probe_identities": len(self.identities),
            "gallery": len(self.gallery_index),
            "gallery_distractors": len(self.distractors),
            "pairs": len(self.same),
            "genuine_pairs": int(sum(self.same)),
            "sharp_images": len(self.sharp),
        }


def plan_split(group: dict[str, list[Path]], pairs: Sequence[Any], lfw_root: Path, n_folds: int = 10) -> SplitPlan:
    plan = SplitPlan()
    index: dict[Path, int] = {}

    def sharp(path: Path) -> int:
        if path not in index:
            index[path] = len(plan.sharp)
            plan.sharp.append(path)
        return index[path]

    for name in sorted(group):
        paths = group[name]
        if len(paths) >= 2:
            label = len(plan.identities)
            plan.identities.append(name)
            plan.gallery_index.append(sharp(paths[0]))
            plan.gallery_labels.append(label)
            plan.probes += paths[1:]
            plan.probe_labels += [label] * (len(paths) - 1)
    for name in sorted(group):
        if len(group[name]) == 1:
            plan.distractors.append(name)
            plan.gallery_index.append(sharp(group[name][0]))
            plan.gallery_labels.append(DISTRACTOR)
    members = {p for paths in group.values() for p in paths}
    for pair in kfold_pair_order(pairs, n_folds):
        a, b = lfw_root / pair.first, lfw_root / pair.second
        for p in (a, b):
            if p not in members:
                raise ValueError(f"the pair image {p} is not among the group's images (folds mixed up?).")
        plan.pair_a.append(sharp(a))
        plan.pair_b.append(sharp(b))
        plan.same.append(bool(pair.same))
    return plan


@dataclass
class RealFacePlan:
    """The whole real-face protocol as paths: groups, adaptation images, validation and evaluation splits."""

    lfw_root: Path
    extra_roots: list[Path]
    groups: Any  # petal_peft.data.lfw.FaceGroups
    adapt: dict[str, list[Path]]
    splits: dict[str, SplitPlan]

    def summary(self) -> dict[str, Any]:
        groups = self.groups.summary()
        groups.pop("base_identities", None)
        return {
            "lfw_root": str(self.lfw_root),
            "extra_roots": [str(p) for p in self.extra_roots],
            "groups": groups,
            "adapt": {"identities": len(self.adapt), "images": sum(len(v) for v in self.adapt.values())},
            **{name: split.counts() for name, split in self.splits.items()},
        }

    def identity_names(self) -> dict[str, set[str]]:
        """Names per group the benchmark uses (base: the names the base model may have seen)."""
        return {
            "base": set(self.groups.base),
            "adapt": set(self.adapt),
            "val": set(self.splits["val"].identities) | set(self.splits["val"].distractors),
            "eval": set(self.splits["eval"].identities) | set(self.splits["eval"].distractors),
        }


def _read_identity_list(path: str | os.PathLike) -> set[str]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    if isinstance(data, dict):
        for key in ("base_identities", "identities"):
            if isinstance(data.get(key), list):
                return set(map(str, data[key]))
        raise ValueError(f"{path}: a JSON object needs a list under 'base_identities' or 'identities'.")
    if isinstance(data, list):
        return set(map(str, data))
    raise ValueError(f"{path}: expected a JSON list of identity names (or one name per line).")


def check_base_identities(plan: RealFacePlan, path: str | os.PathLike) -> None:
    """Raise if any identity the base model was built from is in the adaptation, validation or eval group."""
    base = _read_identity_list(path)
    names = plan.identity_names()
    for group in ("adapt", "val", "eval"):
        overlap = sorted(base & names[group])
        if overlap:
            raise ValueError(
                f"{len(overlap)} identit{'y' if len(overlap) == 1 else 'ies'} of the base model ({path}) "
                f"are in the {group} group, e.g. {overlap[:3]}: the base must be built from other folds."
            )


def plan_real_faces(s: BenchmarkSettings) -> RealFacePlan:
    """Read the pair list and folder layout (no pixels) and lay out groups, probes, gallery and pairs."""
    from ...data.lfw import lfw_face_groups

    if not s.faces:
        raise ValueError("the real_faces source needs `faces`: the folder holding lfw/ (e.g. --faces DIR).")
    lfw_root, extras = resolve_face_roots(s.faces, s.extra_face_sets)
    groups = lfw_face_groups(
        lfw_root,
        extras,
        eval_folds=s.eval_folds,
        validation_folds=s.validation_folds,
        adapt_folds=s.adapt_folds,
        base_folds=s.base_folds,
    )
    adapt = {k: list(v) for k, v in sorted(groups.adapt.items()) if len(v) >= s.adapt_min_images}
    if len(adapt) < 2:
        raise ValueError(f"the adaptation folds {s.adapt_folds} hold {len(adapt)} identities; need >= 2.")
    splits = {
        "val": plan_split(groups.validation, groups.validation_pairs, lfw_root),
        "eval": plan_split(groups.eval, groups.eval_pairs, lfw_root),
    }
    for name, split in splits.items():
        if not split.identities or len(split.same) < 10:
            raise ValueError(
                f"the {name} folds give {len(split.identities)} probe identities and {len(split.same)} pairs; "
                "need identities with >= 2 images and >= 10 View-2 pairs."
            )
    plan = RealFacePlan(lfw_root, extras, groups, adapt, splits)
    if s.base_identities:
        check_base_identities(plan, s.base_identities)
    return plan


_WORKER: dict[str, Any] = {}


def _read(path: Path) -> Image.Image:
    try:
        return read_image(path)
    except ImageReadError as err:
        raise OSError(f"cannot read face image {err}") from None


def _init_worker(name: str, size: int, factory: Any) -> None:
    if name not in IMAGE_PREPARATIONS:  # registered at run time in the parent: the pickled factory brings it
        IMAGE_PREPARATIONS.register(name, factory)
    _WORKER["prepare"] = build_preparation(name, size)


def _picklable(obj: Any) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _prepare_chunk(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(_WORKER["prepare"](_read(p))) for p in paths]


class _PreparedImages:
    """Path -> prepared PIL image, each file read and prepared once (in ``workers`` processes when > 1).

    Worker processes are spawned, never forked, so this is safe to call after torch ran in the same process; a
    preparation whose factory cannot be pickled (a local function) runs in this process instead."""

    def __init__(self, name: str, size: int, workers: int, progress: bool) -> None:
        self.name, self.size, self.workers, self.progress = name, size, workers, progress
        self._prepare: Any = None
        self.cache: dict[Path, Image.Image] = {}

    @property
    def prepare(self) -> Any:
        """Built on first use: a run whose images are all cached never loads the aligner."""
        if self._prepare is None:
            self._prepare = build_preparation(self.name, self.size)
        return self._prepare

    def load(self, paths: Sequence[Path], desc: str = "preparing face images") -> list[Image.Image]:
        todo = [p for p in dict.fromkeys(paths) if p not in self.cache]
        bar = tqdm(total=len(todo), desc=desc, disable=not self.progress or not todo)
        factory = IMAGE_PREPARATIONS.get(self.name) if todo else None
        if self.workers > 1 and len(todo) >= 64 and _picklable(factory):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # "spawn": fresh interpreters. A forked child of a process that already ran torch (or dlib) inherits
            # locks held by threads that do not exist in the child, and the preparation then hangs for ever.
            context = multiprocessing.get_context("spawn")
            chunks = [todo[i : i + 32] for i in range(0, len(todo), 32)]
            with ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(self.name, self.size, factory)
            ) as pool:
                for chunk, arrays in zip(chunks, pool.map(_prepare_chunk, chunks)):
                    self.cache.update((p, Image.fromarray(a)) for p, a in zip(chunk, arrays))
                    bar.update(len(chunk))
        else:
            for path in todo:
                self.cache[path] = self.prepare(_read(path))
                bar.update(1)
        bar.close()
        return [self.cache[p] for p in paths]


class _PreparedStore:
    """Prepared images kept between runs in ``<folder>/prepared-<preparation>-<size>px.npz`` (a folder the user
    names, outside any repository: the file holds pixels of the faces): the dlib alignment of 4,576 photographs
    costs minutes, and a benchmark is often run several times on the same data."""

    def __init__(self, folder: str | os.PathLike, name: str, size: int) -> None:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        self.path = Path(folder) / f"prepared-{safe}-{size}px.npz"

    def read(self) -> dict[Path, Image.Image]:
        if not self.path.is_file():
            return {}
        with np.load(self.path, allow_pickle=False) as data:
            paths = json.loads(str(data["paths"]))
            pixels = data["pixels"]
            return {Path(p): Image.fromarray(pixels[i]) for i, p in enumerate(paths)}

    def write(self, cache: dict[Path, Image.Image]) -> None:
        from ...files import write_file_atomic

        paths = sorted(cache, key=str)
        pixels = np.stack([np.asarray(cache[p].convert("RGB")) for p in paths])
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, paths=np.asarray(json.dumps([str(p) for p in paths])), pixels=pixels)

        write_file_atomic(self.path, write)


def _split(plan: SplitPlan, images: _PreparedImages, size: int, probe_sizes: tuple[int, int], seed: int, name: str):
    return EvalSplit(
        probes=degrade_images(images.load(plan.probes, f"{name} probes"), probe_sizes, seed),
        probe_labels=np.asarray(plan.probe_labels, dtype=np.int64),
        sharp=stack_images(images.load(plan.sharp, f"{name} sharp images"), size),
        gallery_index=np.asarray(plan.gallery_index, dtype=np.int64),
        gallery_labels=np.asarray(plan.gallery_labels, dtype=np.int64),
        pair_a=np.asarray(plan.pair_a, dtype=np.int64),
        pair_b=np.asarray(plan.pair_b, dtype=np.int64),
        same=np.asarray(plan.same, dtype=bool),
    )


@DATA_SOURCES.register("real_faces")
def real_faces_source(s: BenchmarkSettings, image_size: int) -> BenchmarkData:
    """LFW folds (+ extra sets) as disjoint groups, prepared at ``image_size`` (see the module docstring)."""
    plan = plan_real_faces(s)
    images = _PreparedImages(s.prepare, image_size, s.num_threads, s.progress)
    store = _PreparedStore(s.prepared_cache, s.prepare, image_size) if s.prepared_cache else None
    if store is not None:
        images.cache.update(store.read())
    every = [p for paths in plan.adapt.values() for p in paths]
    every += [p for split in plan.splits.values() for p in split.sharp + split.probes]
    before = len(images.cache)
    images.load(every)  # each distinct file once, in parallel where allowed
    if store is not None and len(images.cache) > before:
        store.write(images.cache)
    adapt = {name: images.load(paths) for name, paths in plan.adapt.items()}
    probe_sizes = s.capture_sizes("probe", image_size)
    splits = {
        "val": _split(plan.splits["val"], images, image_size, probe_sizes, 11, "validation"),
        "eval": _split(plan.splits["eval"], images, image_size, probe_sizes, 22, "evaluation"),
    }
    folds = plan.groups.folds
    extras = ", ".join(p.name for p in plan.extra_roots)
    description = (
        f"real faces: LFW View-2 folds {list(folds['eval'])} (eval), {list(folds['validation'])} (validation), "
        f"{list(folds['adapt'])} (adaptation){' + ' + extras + ' joined by name' if extras else ''}; "
        f"identities disjoint from the base folds {list(folds['base'])}; prepared by {s.prepare!r} "
        f"to {image_size} px; probes degraded to {probe_sizes[0]}-{probe_sizes[1]} px"
    )
    summary = plan.summary()
    summary["prepare"] = s.prepare
    summary["probe_capture_px"] = list(probe_sizes)
    summary["train_capture_px"] = list(s.capture_sizes("train", image_size))
    return benchmark_data(
        s,
        image_size,
        adapt,
        splits,
        description=description,
        real_faces=True,
        tag=f"real faces: LFW View-2 folds {', '.join(map(str, folds['eval']))}; research use only",
        terms=REAL_FACE_TERMS,
        summary=summary,
    )
