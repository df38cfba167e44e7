"""IJB-B / IJB-C 1:1 template verification (insightface / CVLface protocol).

Layout (insightface's release): ``<root>/meta/ijb{b,c}_face_tid_mid.txt`` (image, template id, media id),
``<root>/meta/ijb{b,c}_template_pair_label.txt`` (template 1, template 2, label), optionally
``<root>/meta/ijb{b,c}_name_5pts_score.txt`` (image, 10 landmark coordinates, detector score), and images in
``<root>/loose_crop/`` (aligned here with the 5 landmarks) or ``<root>/images/`` (already aligned).

Per image: flip-fused feature with its norm kept (x detector score when available); per media: mean; per
template: sum over media, L2-normalised; score: cosine; TAR at FAR 1e-6 ... 1e-1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..embedding.extractor import Embedder
from ..embedding.images import AlignedImageDataset, ImagePathDataset, ImageTransform
from .base import EVALUATORS, EvaluationResult, Evaluator, quality_of
from .metrics import (
    IJB_FARS,
    far_label,
    roc_auc,
    roc_curve,
    tar_at_far,
    template_features,
    template_pair_scores,
)

SUBSETS = ("ijbb", "ijbc")


def _read_rows(path: str, min_fields: int, what: str) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise ValueError(f"{path}:{line_no}: expected {what}, got {line.strip()!r}.")
            rows.append(fields)
    if not rows:
        raise ValueError(f"{path} is empty.")
    return rows


def _ints(path: str, rows: list[list[str]], cols: Sequence[int]) -> np.ndarray:
    try:
        return np.array([[int(r[c]) for c in cols] for r in rows], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: non-integer id ({err}).") from None


@EVALUATORS.register("ijb")
class IJBEvaluator(Evaluator):
    """TAR at FAR 1e-6 ... 1e-1 over the template pairs of IJB-B or IJB-C."""

    name = "ijb"
    headline_metrics = tuple(f"TAR@FAR={far_label(f)}" for f in IJB_FARS)

    def __init__(
        self,
        data_path: str | os.PathLike,
        transform: ImageTransform,
        subset: str | None = None,
        fars: Sequence[float] = IJB_FARS,
        use_detector_score: bool = True,
        tar_method: str = "nearest",
    ) -> None:
        super().__init__(data_path, transform)
        root = self.data_path
        meta = os.path.join(root, "meta")
        if not os.path.isdir(meta):
            raise FileNotFoundError(f"{root} is not an IJB folder: expected meta/ with the protocol files.")
        if subset is None:
            found = [s for s in SUBSETS if os.path.isfile(os.path.join(meta, f"{s}_face_tid_mid.txt"))]
            if len(found) != 1:
                raise FileNotFoundError(
                    f"{meta} must contain exactly one of ijbb_face_tid_mid.txt / ijbc_face_tid_mid.txt "
                    f"(found {found}); pass subset='ijbb' or 'ijbc'."
                )
            subset = found[0]
        subset = subset.lower().replace("-", "")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}.")
        self.subset = subset
        self.fars = tuple(float(f) for f in fars)
        self.tar_method = tar_method
        tid_mid_path = os.path.join(meta, f"{subset}_face_tid_mid.txt")
        pair_path = os.path.join(meta, f"{subset}_template_pair_label.txt")
        for p in (tid_mid_path, pair_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"IJB protocol file missing: {p}")
        rows = _read_rows(tid_mid_path, 3, "'<image> <template_id> <media_id>'")
        names = [r[0] for r in rows]
        ids = _ints(tid_mid_path, rows, (1, 2))
        self.templates, self.medias = ids[:, 0], ids[:, 1]
        pairs = _ints(pair_path, _read_rows(pair_path, 3, "'<template_1> <template_2> <label>'"), (0, 1, 2))
        self.t1, self.t2 = pairs[:, 0], pairs[:, 1]
        if not np.isin(pairs[:, 2], (0, 1)).all():
            raise ValueError(f"{pair_path}: labels must be 0 or 1.")
        self.labels = pairs[:, 2].astype(bool)
        unknown = np.setdiff1d(np.unique(np.r_[self.t1, self.t2]), self.templates)
        if len(unknown):
            raise ValueError(
                f"{pair_path} names {len(unknown)} templates absent from {tid_mid_path} "
                f"(mismatched meta files?), "
                f"e.g. {unknown[:5].tolist()}."
            )

        lmk_path = os.path.join(meta, f"{subset}_name_5pts_score.txt")
        image_dir = next(
            (os.path.join(root, d) for d in ("loose_crop", "images") if os.path.isdir(os.path.join(root, d))),
            None,
        )
        if image_dir is None:
            raise FileNotFoundError(f"{root} has no loose_crop/ or images/ folder with the IJB images.")
        paths = [os.path.join(image_dir, n) for n in names]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of {tid_mid_path} are missing, e.g. {missing[:3]}.")
        self.detector_scores: np.ndarray | None = None
        if os.path.isfile(lmk_path):
            lmk_rows = {r[0]: r for r in _read_rows(lmk_path, 12, "'<image> <10 landmark coordinates> <score>'")}
            absent = [n for n in names if n not in lmk_rows]
            if absent:
                raise ValueError(f"{lmk_path} has no landmarks for {len(absent)} images, e.g. {absent[:3]}.")
            landmarks = np.array([[float(v) for v in lmk_rows[n][1:11]] for n in names])
            self.detector_scores = np.array([float(lmk_rows[n][-1]) for n in names])
            self.dataset = AlignedImageDataset(paths, landmarks, transform)
        else:
            self.dataset = ImagePathDataset(paths, transform)
        self.use_detector_score = use_detector_score and self.detector_scores is not None

    @property
    def dataset_name(self) -> str:
        return {"ijbb": "IJBB", "ijbc": "IJBC"}[self.subset]

    def evaluate(self, embedder: Embedder) -> EvaluationResult:
        emb = embedder.embed(self.dataset, role="pair", desc=f"{self.dataset_name} images")
        feats = emb.raw.double().numpy()
        if self.use_detector_score:
            feats = feats * self.detector_scores[:, None]
        template_ids, template_feats = template_features(feats, self.templates, self.medias)
        scores = template_pair_scores(template_ids, template_feats, self.t1, self.t2)
        fpr, tpr, _ = roc_curve(self.labels, scores, drop_intermediate=self.tar_method == "nearest")
        tars = tar_at_far(fpr, tpr, self.fars, method=self.tar_method)
        metrics: dict = {f"TAR@FAR={far_label(f)}": v for f, v in tars.items()}
        metrics["auc"] = 100.0 * roc_auc(fpr, tpr)
        metrics.update(
            num_images=len(self.templates),
            num_templates=int(len(template_ids)),
            num_pairs=int(len(self.labels)),
            num_genuine_pairs=int(self.labels.sum()),
            tar_method=self.tar_method,
            detector_score=bool(self.use_detector_score),
        )
        quality = {} if (q := quality_of(emb)) is None else {"images": q}
        return EvaluationResult(metrics=metrics, curves={"fpr": fpr, "tpr": tpr}, quality=quality)
