"""Top-k identities for probe images against an embedded gallery.

Scores are inner products of unit embeddings (cosine similarity). An identity's score for a probe is its best
gallery image's score (the nearest-neighbour rule of closed-set identification); identities are ranked by it.
When the probes' own identities (their folder names) occur in the gallery, the identification rates at rank 1
and rank k over those mated probes are reported as well.

With a ``threshold`` (a cosine similarity) the search is open-set: a probe whose best identity scores below it
is answered "unknown" (the person is taken to be absent from the gallery), and the rates gain the detection and
identification rate (mated probes found at rank 1 *and* above the threshold) and the false positive
identification rate (probes of people absent from the gallery that still get a name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .index import EmbeddingIndex

logger = logging.getLogger(__name__)

#: settings that must agree for two indexes to be comparable (the embedding function and its input)
_MUST_MATCH = ("base_model", "flip_test", "transform")


@dataclass
class Match:
    identity: str
    score: float
    gallery_file: str


#: the answer of an open-set search for a probe whose best score is below the threshold
UNKNOWN = "unknown"


@dataclass
class ProbeResult:
    probe_file: str
    probe_identity: str
    matches: list[Match]
    #: the identity answered: the best match, or UNKNOWN below the threshold of an open-set search
    answer: str = ""

    @property
    def rank(self) -> int:
        """1-based rank of the probe's own identity among the matches (0 if not among them)."""
        for i, match in enumerate(self.matches, 1):
            if match.identity == self.probe_identity:
                return i
        return 0


@dataclass
class SearchResult:
    results: list[ProbeResult]
    top_k: int
    gallery: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    num_mated: int = 0
    gallery_identities: frozenset[str] = frozenset()
    #: cosine similarity below which the answer is "unknown" (None: closed-set search)
    threshold: float | None = None
    threshold_source: str | None = None

    def rates(self) -> dict[str, float]:
        """Percent of mated probes (identity present in the gallery) found at rank 1 and within top k; with a
        threshold also ``DIR`` (mated probes answered with their own identity) and ``FPIR`` (probes of people
        absent from the gallery answered with a name), when such probes exist."""
        rates: dict[str, float] = {}
        mated = [r for r in self.results if r.probe_identity in self.gallery_identities]
        if mated:
            rates["rank-1"] = 100.0 * sum(r.rank == 1 for r in mated) / len(mated)
            rates[f"rank-{self.top_k}"] = 100.0 * sum(r.rank >= 1 for r in mated) / len(mated)
        if self.threshold is not None:
            if mated:
                rates["DIR"] = 100.0 * sum(r.answer == r.probe_identity for r in mated) / len(mated)
            absent = [r for r in self.results if r.probe_identity not in self.gallery_identities]
            if absent:
                rates["FPIR"] = 100.0 * sum(r.answer != UNKNOWN for r in absent) / len(absent)
        return rates

    def to_json(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "answer": "the best identity, or 'unknown' when its score is below the threshold (open-set search)"
            if self.threshold is not None
            else "the best identity (closed-set search: no threshold)",
            "score": "cosine similarity of flip-fused unit embeddings; identity score = best gallery image",
            "gallery": self.gallery,
            "probes": self.probes,
            "num_probes": len(self.results),
            "num_mated_probes": self.num_mated,
            "rates_percent": self.rates(),
            "results": [
                {
                    "probe": r.probe_file,
                    "probe_identity": r.probe_identity,
                    "answer": r.answer,
                    "matches": [m.__dict__ for m in r.matches],
                }
                for r in self.results
            ],
        }


def check_comparable(gallery: EmbeddingIndex, probes: EmbeddingIndex) -> None:
    """Refuse embeddings of different sizes or made with other weights (base model or adapter, by their
    fingerprints); warn when they were made with other settings."""
    from .provenance import check_same_weights

    check_same_weights(
        gallery.info.get("weights"),
        probes.info.get("weights"),
        f"the gallery index {gallery.info.get('path') or ''}".rstrip(),
        f"the probes {probes.info.get('path') or '(embedded now)'}",
    )
    if gallery.dim != probes.dim:
        raise ValueError(
            f"the gallery embeddings have {gallery.dim} dimensions and the probes {probes.dim}: they come from "
            "different models."
        )
    for key in _MUST_MATCH:
        a, b = gallery.info.get(key), probes.info.get(key)
        if a is not None and b is not None and a != b:
            logger.warning("gallery and probes were embedded with different %s (%r vs %r)", key, a, b)


@torch.no_grad()
def search(
    gallery: EmbeddingIndex,
    probes: EmbeddingIndex,
    top_k: int = 5,
    block: int = 1024,
    threshold: float | None = None,
    threshold_source: str | None = None,
) -> SearchResult:
    """For every probe, the ``top_k`` gallery identities by their best image's cosine similarity.

    Args:
        gallery: the embedded gallery.
        probes: the embedded probes.
        top_k: identities listed per probe.
        block: probes scored at once.
        threshold: cosine similarity in [-1, 1] below which a probe is answered "unknown" (open-set search);
            None answers every probe with its best identity.
        threshold_source: where ``threshold`` came from (recorded in the result).

    Returns:
        A :class:`SearchResult`.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if threshold is not None and not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"the search threshold is a cosine similarity in [-1, 1], got {threshold}.")
    check_comparable(gallery, probes)
    names = gallery.identity_names
    k = min(top_k, len(names))
    gallery_ids = gallery.identity_ids()
    g = gallery.embeddings.float()
    # the [block, k, G] mask below stays under 2**24 elements (64 MiB)
    block = max(1, min(block, (1 << 24) // max(1, k * len(gallery))))
    results: list[ProbeResult] = []
    for start in range(0, len(probes), block):
        p = probes.embeddings[start : start + block].float()
        scores = p @ g.T  # [P, G]
        per_identity = torch.full((p.shape[0], len(names)), float("-inf"))
        per_identity.scatter_reduce_(1, gallery_ids.expand(p.shape[0], -1), scores, reduce="amax")
        best_scores, best_ids = per_identity.topk(k, dim=1)
        # the gallery image behind each identity score
        masked = torch.where(gallery_ids[None, None, :] == best_ids[:, :, None], scores[:, None, :], float("-inf"))
        best_images = masked.argmax(dim=2)
        for row in range(p.shape[0]):
            i = start + row
            matches = [
                Match(names[int(best_ids[row, j])], float(best_scores[row, j]), gallery.files[int(best_images[row, j])])
                for j in range(k)
            ]
            best = matches[0]
            answer = best.identity if threshold is None or best.score >= threshold else UNKNOWN
            results.append(ProbeResult(probes.files[i], probes.identities[i], matches, answer))
    gallery_names = set(names)
    return SearchResult(
        results=results,
        top_k=k,
        gallery={
            "path": gallery.info.get("path"),
            "encoder": gallery.info.get("encoder"),
            "count": len(gallery),
            "identities": len(names),
        },
        probes={
            "path": probes.info.get("path"),
            "encoder": probes.info.get("encoder"),
            "count": len(probes),
            **({"skipped_images": probes.info["skipped_images"]} if probes.info.get("skipped_images") else {}),
        },
        num_mated=sum(r.probe_identity in gallery_names for r in results),
        gallery_identities=frozenset(gallery_names),
        threshold=None if threshold is None else float(threshold),
        threshold_source=threshold_source,
    )
