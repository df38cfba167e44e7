"""TinyFace closed-set identification (CVLface protocol).

Layout: ``<root>/Probe``, ``<root>/Gallery_Match``, ``<root>/Gallery_Distractor`` (``<root>`` may also be the
folder above ``Testing_Set``). Identity = file-name prefix before the first ``_``; distractors get
:data:`~.metrics.DISTRACTOR_LABEL`. Probes are embedded in the probe role, the gallery in the gallery role.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from ..embedding.extractor import Embedder
from ..embedding.images import ImagePathDataset, ImageTransform, list_images
from .base import EVALUATORS, EvaluationResult, Evaluator, quality_of
from .metrics import DISTRACTOR_LABEL, closed_set_identification

logger = logging.getLogger(__name__)

PROBE_DIR, MATCH_DIR, DISTRACTOR_DIR = "Probe", "Gallery_Match", "Gallery_Distractor"


def identity_from_filename(path: str) -> str:
    """``"1234_5.jpg" -> "1234"`` (TinyFace names images ``<identity>_<index>``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if "_" not in stem or not stem.split("_", 1)[0]:
        raise ValueError(f"cannot read an identity from {path!r}: TinyFace names images <identity>_<n>.<ext>.")
    return stem.split("_", 1)[0]


def find_tinyface_root(data_path: str) -> str:
    """The folder holding Probe/ and Gallery_Match/ (``data_path`` itself or its Testing_Set/)."""
    for candidate in (
        data_path,
        os.path.join(data_path, "Testing_Set"),
        os.path.join(data_path, "tinyface", "Testing_Set"),
    ):
        if os.path.isdir(os.path.join(candidate, PROBE_DIR)) and os.path.isdir(os.path.join(candidate, MATCH_DIR)):
            return candidate
    found = sorted(os.listdir(data_path)) if os.path.isdir(data_path) else []
    raise FileNotFoundError(
        f"{data_path} is not a TinyFace test folder: expected {PROBE_DIR}/, {MATCH_DIR}/ and "
        f"{DISTRACTOR_DIR}/ in it (or in its Testing_Set/); found {found[:10]}."
    )


@EVALUATORS.register("tinyface")
class TinyFaceEvaluator(Evaluator):
    """CMC at ranks 1/5/10/20 and mAP over mated probes; gallery = matches + distractors."""

    name = "tinyface"
    headline_metrics = ("rank-1", "rank-5", "rank-10", "rank-20", "mAP")

    def __init__(
        self,
        data_path: str | os.PathLike,
        transform: ImageTransform,
        ranks: Sequence[int] = (1, 5, 10, 20),
        ties: str = "pessimistic",
    ) -> None:
        super().__init__(data_path, transform)
        self.root = find_tinyface_root(self.data_path)
        self.ranks = tuple(int(r) for r in ranks)
        self.ties = ties
        self.probe_paths = list_images(os.path.join(self.root, PROBE_DIR))
        self.match_paths = list_images(os.path.join(self.root, MATCH_DIR))
        distractor_dir = os.path.join(self.root, DISTRACTOR_DIR)
        if os.path.isdir(distractor_dir):
            self.distractor_paths = list_images(distractor_dir)
        else:
            logger.warning(
                "%s has no %s/: evaluating without distractors (not the paper's protocol).",
                self.root,
                DISTRACTOR_DIR,
            )
            self.distractor_paths = []
        for folder, paths in ((PROBE_DIR, self.probe_paths), (MATCH_DIR, self.match_paths)):
            if not paths:
                raise ValueError(f"{os.path.join(self.root, folder)} contains no images.")
        probe_ids = [identity_from_filename(p) for p in self.probe_paths]
        match_ids = [identity_from_filename(p) for p in self.match_paths]
        index = {name: i for i, name in enumerate(sorted(set(probe_ids) | set(match_ids)))}
        self.probe_labels = np.array([index[n] for n in probe_ids], dtype=np.int64)
        self.gallery_labels = np.array(
            [index[n] for n in match_ids] + [DISTRACTOR_LABEL] * len(self.distractor_paths), dtype=np.int64
        )

    def evaluate(self, embedder: Embedder) -> EvaluationResult:
        probes = embedder.embed(
            ImagePathDataset(self.probe_paths, self.transform), role="probe", desc="TinyFace probes"
        )
        gallery = embedder.embed(
            ImagePathDataset(self.match_paths + self.distractor_paths, self.transform),
            role="gallery",
            desc="TinyFace gallery",
        )
        result = closed_set_identification(
            probes.embeddings,
            self.probe_labels,
            gallery.embeddings,
            self.gallery_labels,
            ranks=self.ranks,
            ties=self.ties,
        )
        metrics = result.metrics()
        metrics["num_distractors"] = len(self.distractor_paths)
        quality = {}
        if (q := quality_of(gallery)) is not None:
            quality["gallery"] = q
        if (q := quality_of(probes)) is not None:
            quality["probe"] = q
        return EvaluationResult(
            metrics=metrics, curves={"cmc": result.cmc[: max(100, max(self.ranks))]}, quality=quality
        )
