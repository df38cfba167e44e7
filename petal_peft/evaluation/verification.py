"""1:1 verification (LFW, CFP-FP, AgeDB-30, ...): 10-fold accuracy on squared L2 distances
(the insightface / CVLface protocol).

Data: an insightface ``.bin`` (read with a restricted unpickler), or a pair list: a text file (or a folder
holding ``pairs.txt`` / ``pairs.csv``) with one pair per line, ``<image_a> <image_b> <label>`` separated by
tabs or commas (paths may then hold spaces) or spaces, paths relative to the list's folder, label 1/0 (also
true/false, same/diff); an optional header row names the columns (LFW's ``fold,label,img1,img2``).
Both images of a pair are embedded in the ``pair`` role.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np

from ..embedding.extractor import Embedder
from ..embedding.images import EncodedImageDataset, ImagePathDataset, ImageTransform
from .base import EVALUATORS, EvaluationResult, Evaluator, quality_of
from .metrics import kfold_verification_accuracy, roc_auc, roc_curve, squared_l2
from .safe_pickle import load_verification_bin

_TRUE = {"1", "true", "same", "yes", "genuine"}
_FALSE = {"0", "false", "diff", "different", "no", "impostor"}
PAIR_LIST_NAMES = ("pairs.txt", "pairs.csv")


_IMAGE_COLUMNS = re.compile(
    r"^(img|image|path|file|photo)[ _-]?(1|2|a|b)$|^(a|b|first|second|left|right)$", re.IGNORECASE
)
_LABEL_COLUMNS = {"label", "same", "is_same", "issame", "match", "genuine", "y"}


def _split_pair_line(line: str) -> list[str]:
    """Fields of one line: tab-separated when it has a tab, CSV (quotes allowed) when it has a comma, else
    whitespace-separated. Tabs and commas let paths contain spaces."""
    if "\t" in line:
        return [x.strip() for x in line.split("\t") if x.strip()]
    if "," in line:
        return [x.strip() for x in next(csv.reader([line], skipinitialspace=True)) if x.strip()]
    return line.split()


def _header_columns(fields: list[str]) -> tuple[int, int, int | None] | None:
    """(column of image a, of image b, of the label or None) when ``fields`` is a header row naming them, e.g.
    LFW's ``fold,label,img1,img2`` or ``image_a,image_b,label``; None when it is not a header."""
    names = [f.lower() for f in fields]
    if any(n in _TRUE | _FALSE for n in names):
        return None
    images = [i for i, n in enumerate(names) if _IMAGE_COLUMNS.match(n)]
    labels = [i for i, n in enumerate(names) if n in _LABEL_COLUMNS]
    if len(images) != 2 or len(labels) > 1:
        return None
    return images[0], images[1], (labels[0] if labels else None)


def read_pair_rows(path: str | os.PathLike) -> tuple[list[tuple[str, str]], list[bool] | None]:
    """A pair list as written: ``<image_a> <image_b> [label]`` per line, labels on every line or on none (then
    None).

    Fields are separated by tabs or commas (then paths may hold spaces; CSV quoting works) or, for paths without
    spaces, by spaces. ``#`` starts a comment line. An optional header row names the columns, so other columns may
    come along: LFW's own ``fold,label,img1,img2``, or ``image_a,image_b,label``.
    """
    pairs: list[tuple[str, str]] = []
    labels: list[bool] = []
    columns: tuple[int, int, int | None] | None = None
    width: int | None = None
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = _split_pair_line(line)
            if not pairs and columns is None:
                columns = _header_columns(fields)
                if columns is not None:
                    width = len(fields)
                    continue
            if columns is not None:
                if len(fields) != width:
                    raise ValueError(
                        f"{path}:{line_no}: the header names {width} columns, this line has {len(fields)}: {line!r} "
                        "(a path with spaces needs tab- or comma-separated fields)."
                    )
                a, b, label_column = columns
                row = [fields[a], fields[b]] + ([fields[label_column]] if label_column is not None else [])
            else:
                row = fields
            if len(row) not in (2, 3):
                raise ValueError(
                    f"{path}:{line_no}: expected '<image_a> <image_b> [label]', got {len(row)} fields: {line!r} "
                    "(a path with spaces needs tab- or comma-separated fields)."
                )
            if len(row) == 3:
                label = row[2].lower()
                if label not in _TRUE | _FALSE:
                    raise ValueError(f"{path}:{line_no}: label {row[2]!r} is not 1/0 (or true/false, same/diff).")
                labels.append(label in _TRUE)
            pairs.append((row[0], row[1]))
    if not pairs:
        raise ValueError(f"{path} lists no pairs.")
    if labels and len(labels) != len(pairs):
        raise ValueError(f"{path}: give a label on every line or on none.")
    return pairs, (labels or None)


def read_pair_list(path: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A labelled pair list for evaluation: (unique image paths, index of image a, index of image b, is_same);
    relative paths are relative to the list's folder."""
    pairs, labels = read_pair_rows(path)
    if labels is None:
        raise ValueError(
            f"{path}: expected '<image_a> <image_b> <label>', got 2 fields: a verification pair list needs a label "
            "(1 same, 0 different) on every line."
        )
    base = os.path.dirname(os.path.abspath(path))
    images: dict[str, int] = {}
    first, second = [], []
    for pair in pairs:
        a, b = (images.setdefault(rel if os.path.isabs(rel) else os.path.join(base, rel), len(images)) for rel in pair)
        first.append(a)
        second.append(b)
    paths = list(images)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{path} names {len(missing)} image(s) that do not exist (mismatched pair list?), e.g. {missing[:3]}."
        )
    return paths, np.array(first), np.array(second), np.array(labels, dtype=bool)


@EVALUATORS.register("verification")
class VerificationEvaluator(Evaluator):
    """Mean ± std of 10-fold accuracy (threshold chosen on the other 9 folds), plus ROC and AUC."""

    name = "verification"
    headline_metrics = ("accuracy",)

    def __init__(
        self,
        data_path: str | os.PathLike,
        transform: ImageTransform,
        n_folds: int = 10,
        thresholds: np.ndarray | None = None,
    ) -> None:
        super().__init__(data_path, transform)
        self.n_folds = n_folds
        self.thresholds = thresholds
        path = self.data_path
        if os.path.isdir(path):
            lists = [os.path.join(path, n) for n in PAIR_LIST_NAMES if os.path.isfile(os.path.join(path, n))]
            if not lists:
                raise FileNotFoundError(
                    f"{path} is a folder without {' or '.join(PAIR_LIST_NAMES)}; pass an insightface .bin "
                    "file or a pair list ('<image_a> <image_b> <label>' per line)."
                )
            path = lists[0]
        self.source = path
        if path.lower().endswith(".bin"):
            data = load_verification_bin(path)
            self.dataset = EncodedImageDataset(data.images, transform)
            n = data.num_pairs
            self.first, self.second = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
            self.is_same = np.array(data.is_same, dtype=bool)
        else:
            paths, self.first, self.second, self.is_same = read_pair_list(path)
            self.dataset = ImagePathDataset(paths, transform)
        if len(self.is_same) < n_folds:
            raise ValueError(f"{path}: {len(self.is_same)} pairs are too few for {n_folds}-fold verification.")
        if self.is_same.all() or not self.is_same.any():
            raise ValueError(f"{path}: verification needs both same-identity and different-identity pairs.")

    @property
    def dataset_name(self) -> str:
        stem = os.path.splitext(os.path.basename(self.source))[0]
        return stem if stem not in ("pairs",) else os.path.basename(os.path.dirname(os.path.abspath(self.source)))

    def evaluate(self, embedder: Embedder) -> EvaluationResult:
        emb = embedder.embed(self.dataset, role="pair", desc=f"{self.dataset_name} images")
        e = emb.embeddings
        distances = squared_l2(e[self.first], e[self.second])
        kfold = kfold_verification_accuracy(distances, self.is_same, n_folds=self.n_folds, thresholds=self.thresholds)
        fpr, tpr, _ = roc_curve(self.is_same, -distances)
        metrics = kfold.metrics()
        metrics["auc"] = 100.0 * roc_auc(fpr, tpr)
        metrics["num_pairs"] = int(len(self.is_same))
        metrics["num_genuine_pairs"] = int(self.is_same.sum())
        quality = {} if (q := quality_of(emb)) is None else {"images": q}
        return EvaluationResult(metrics=metrics, curves={"fpr": fpr, "tpr": tpr}, quality=quality)
