"""1:1 verification (LFW, CFP-FP, AgeDB-30, ...): 10-fold accuracy on squared L2 distances
(the insightface / CVLface protocol).

Data: an insightface ``.bin`` (read with a restricted unpickler), or a pair list: a text file (or a folder
holding ``pairs.txt`` / ``pairs.csv``) with one pair per line, ``<image_a> <image_b> <label>`` separated by
spaces, tabs or commas, paths relative to the list's folder, label 1/0 (also true/false, same/diff).
Both images of a pair are embedded in the ``pair`` role.
"""

from __future__ import annotations

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


def read_pair_rows(path: str | os.PathLike) -> tuple[list[tuple[str, str]], list[bool] | None]:
    """A pair list as written: ``<image_a> <image_b> [label]`` per line (spaces, tabs or commas; ``#`` comments;
    an optional header row), labels on every line or on none (then None)."""
    pairs: list[tuple[str, str]] = []
    labels: list[bool] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x for x in re.split(r"[,\t ]+", line) if x]
            if len(fields) not in (2, 3):
                raise ValueError(
                    f"{path}:{line_no}: expected '<image_a> <image_b> [label]', got {len(fields)} fields: {line!r}."
                )
            if len(fields) == 3:
                label = fields[2].lower()
                if label not in _TRUE | _FALSE:
                    if not pairs:
                        continue  # a header row such as "image_a,image_b,label"
                    raise ValueError(f"{path}:{line_no}: label {fields[2]!r} is not 1/0 (or true/false, same/diff).")
                labels.append(label in _TRUE)
            pairs.append((fields[0], fields[1]))
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
