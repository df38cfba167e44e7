"""Labeled Faces in the Wild (LFW) View 2: its pairs, its ten identity-disjoint folds, and identity groups.

LFW's View-2 protocol lists 6,000 pairs in ten folds of 300 same + 300 different pairs, and no person appears in
two folds. That makes the folds ready-made disjoint identity groups: a base model, an adaptation set and an
evaluation set can each take whole folds and share nobody. Pair lists are read in either of two layouts:

- LFW's own ``pairs.txt``: a header line ``10 300``, then per fold 300 lines ``name n1 n2`` (same person) and
  300 lines ``name1 n1 name2 n2`` (different people); images are ``<name>/<name>_<nnnn>.jpg``;
- a CSV ``fold,label,img1,img2`` with paths relative to the image root (``pairs_view2.csv``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from petal_peft.data.base import IMAGE_EXTENSIONS
from petal_peft.data.errors import DataValidationError

__all__ = [
    "FaceGroups",
    "LfwPair",
    "identity_folds",
    "lfw_face_groups",
    "list_identity_images",
    "read_lfw_pairs",
]

PAIR_FILE_NAMES = ("pairs_view2.csv", "pairs.txt")


@dataclass(frozen=True)
class LfwPair:
    """One View-2 pair: paths relative to the LFW image root."""

    fold: int
    same: bool
    first: str
    second: str

    @property
    def identities(self) -> tuple[str, str]:
        return Path(self.first).parts[0], Path(self.second).parts[0]


def _find_pair_file(root: Path) -> Path:
    if root.is_file():
        return root
    for name in PAIR_FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataValidationError(f"{root}: no LFW pair list ({' or '.join(PAIR_FILE_NAMES)}) found.")


def _lfw_image(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def _read_pairs_txt(path: Path) -> list[LfwPair]:
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2 or not all(v.isdigit() for v in lines[0]):
        raise DataValidationError(f"{path}: the first line must be '<folds> <pairs per class>', e.g. '10 300'.")
    folds, per_class = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * per_class:
        raise DataValidationError(f"{path}: expected {folds * 2 * per_class} pair lines, found {len(body)}.")
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per_class)
        if len(parts) == 3:
            pairs.append(LfwPair(fold, True, _lfw_image(parts[0], parts[1]), _lfw_image(parts[0], parts[2])))
        elif len(parts) == 4:
            pairs.append(LfwPair(fold, False, _lfw_image(parts[0], parts[1]), _lfw_image(parts[2], parts[3])))
        else:
            raise DataValidationError(f"{path}:{i + 2}: a pair line has 3 or 4 fields, got {len(parts)}.")
    return pairs


def _read_pairs_csv(path: Path) -> list[LfwPair]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"fold", "label", "img1", "img2"}
        if not need <= set(reader.fieldnames or ()):
            raise DataValidationError(f"{path}: the header must name {sorted(need)}, got {reader.fieldnames}.")
        try:
            return [LfwPair(int(row["fold"]), int(row["label"]) == 1, row["img1"], row["img2"]) for row in reader]
        except ValueError as err:
            raise DataValidationError(f"{path}: {err}") from None


def read_lfw_pairs(root: str | os.PathLike, check_images: bool = True) -> list[LfwPair]:
    """The View-2 pairs of an LFW folder (or of a pair-list file whose folder holds the images)."""
    root = Path(root)
    path = _find_pair_file(root)
    pairs = _read_pairs_csv(path) if path.suffix == ".csv" else _read_pairs_txt(path)
    if not pairs:
        raise DataValidationError(f"{path} lists no pairs.")
    if check_images:
        image_root = path.parent
        missing = sorted({p for pair in pairs for p in (pair.first, pair.second) if not (image_root / p).is_file()})
        if missing:
            raise DataValidationError(
                f"{path} names {len(missing)} image(s) missing under {image_root}, e.g. {missing[:3]}."
            )
    return pairs


def identity_folds(pairs: Iterable[LfwPair]) -> dict[str, int]:
    """``{identity: fold}``; raises if a person appears in two folds (then folds are not identity groups)."""
    folds: dict[str, int] = {}
    for pair in pairs:
        for name in pair.identities:
            if folds.setdefault(name, pair.fold) != pair.fold:
                raise DataValidationError(f"{name!r} appears in folds {folds[name]} and {pair.fold}.")
    return folds


def list_identity_images(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{identity: sorted image paths}`` of a ``root/<identity>/<image>`` tree (identities sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataValidationError(f"{root}: no such folder.")
    out = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if images:
                out[entry.name] = images
    return out


@dataclass
class FaceGroups:
    """Disjoint identity groups for a base model, adaptation, validation and evaluation, by name across sets.

    Each group maps identity -> image paths. ``eval_pairs`` / ``validation_pairs`` are the View-2 pairs of the
    evaluation / validation folds; ``dropped`` lists the extra-set identities left out because their name belongs
    to an evaluation or validation fold.
    """

    base: dict[str, list[Path]] = field(default_factory=dict)
    adapt: dict[str, list[Path]] = field(default_factory=dict)
    validation: dict[str, list[Path]] = field(default_factory=dict)
    eval: dict[str, list[Path]] = field(default_factory=dict)
    eval_pairs: list[LfwPair] = field(default_factory=list)
    validation_pairs: list[LfwPair] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    folds: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Counts and fold assignment, JSON-able (identity names of the base group included, for the record)."""
        return {
            "folds": {k: list(v) for k, v in self.folds.items()},
            **{
                name: {"identities": len(group), "images": sum(len(v) for v in group.values())}
                for name, group in (
                    ("base", self.base),
                    ("adapt", self.adapt),
                    ("validation", self.validation),
                    ("eval", self.eval),
                )
            },
            "eval_pairs": len(self.eval_pairs),
            "validation_pairs": len(self.validation_pairs),
            "dropped_extra_identities": list(self.dropped),
            "base_identities": sorted(self.base),
        }


def lfw_face_groups(
    lfw_root: str | os.PathLike,
    extra_roots: Sequence[str | os.PathLike] = (),
    eval_folds: Sequence[int] = (0, 1, 2),
    validation_folds: Sequence[int] = (3,),
    adapt_folds: Sequence[int] = (4, 5),
    base_folds: Sequence[int] = (6, 7, 8, 9),
) -> FaceGroups:
    """Split LFW by View-2 fold, and extra ``root/<identity>/<image>`` sets by name, into disjoint groups.

    An extra identity whose name is an LFW identity joins the group of that person's fold (its images added to
    the LFW ones) when that group is the base or adaptation group, and is dropped when it is the evaluation or
    validation group, so nobody evaluated was seen in another set's photos. Extra identities not in LFW join the
    base group.
    """
    groups = {"eval": tuple(eval_folds), "validation": tuple(validation_folds)}
    groups.update(adapt=tuple(adapt_folds), base=tuple(base_folds))
    seen: dict[int, str] = {}
    for name, folds in groups.items():
        for fold in folds:
            if fold in seen:
                raise ValueError(f"fold {fold} is assigned to both {seen[fold]} and {name}.")
            seen[fold] = name
    lfw_root = Path(lfw_root)
    pairs = read_lfw_pairs(lfw_root)
    fold_of = identity_folds(pairs)
    out = FaceGroups(folds=groups)
    images = list_identity_images(lfw_root)
    for name, paths in images.items():
        fold = fold_of.get(name)
        group = seen.get(fold) if fold is not None else None
        if group is not None:
            getattr(out, group)[name] = list(paths)
    for extra in extra_roots:
        for name, paths in list_identity_images(extra).items():
            group = seen.get(fold_of[name]) if name in fold_of else "base"
            if group in ("eval", "validation"):
                out.dropped.append(name)
            elif group is not None:
                getattr(out, group).setdefault(name, []).extend(paths)
    out.eval_pairs = [p for p in pairs if p.fold in groups["eval"]]
    out.validation_pairs = [p for p in pairs if p.fold in groups["validation"]]
    return out
