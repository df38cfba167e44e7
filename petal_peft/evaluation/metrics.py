"""Pure metric functions on embeddings, scores and labels (no models, no files).

They follow the protocols of CVLface and insightface so that numbers are comparable
with the paper's: closed-set CMC over mated probes, 10-fold verification accuracy over squared L2 distances,
and TAR at fixed FAR read off the ROC. Percentages are returned as 0-100 floats, as the field reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..embedding.vectors import fuse_flip, l2_normalize  # noqa: F401  (fuse_flip re-exported: it lived here)

#: Label given to gallery distractors (never equal to a probe identity).
DISTRACTOR_LABEL = -100

#: FARs at which IJB-B/C report TAR.
IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _as_2d_float(name: str, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"`{name}` must be a 2-D array [num_items, dim], got shape {tuple(t.shape)}.")
    if not t.is_floating_point():
        raise TypeError(f"`{name}` must be floating point, got dtype {t.dtype}.")
    if t.shape[0] == 0:
        raise ValueError(f"`{name}` is empty.")
    if not torch.isfinite(t).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return t


def _as_1d_labels(name: str, labels: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != length:
        raise ValueError(f"`{name}` has {arr.shape[0]} entries but there are {length} embeddings.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`{name}` must be integer identity labels, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Closed-set identification (TinyFace)
# ----------------------------------------------------------------------------------------------------


@dataclass
class IdentificationResult:
    """Per-probe outcome of closed-set identification.

    ``ranks`` is the 1-based rank of the first correct gallery entry for each probe (0 for an unmated probe,
    whose identity is not in the gallery); ``average_precision`` is NaN for unmated probes.
    """

    ranks: np.ndarray
    average_precision: np.ndarray
    gallery_size: int
    report_ranks: tuple[int, ...] = (1, 5, 10, 20)
    cmc: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        mated = self.ranks[self.ranks > 0]
        max_rank = self.gallery_size
        counts = np.bincount(mated, minlength=max_rank + 1)[1:]
        self.cmc = np.cumsum(counts) / max(len(mated), 1)

    @property
    def num_mated(self) -> int:
        return int((self.ranks > 0).sum())

    @property
    def num_unmated(self) -> int:
        return int((self.ranks == 0).sum())

    def rank_accuracy(self, rank: int) -> float:
        """Percentage of mated probes whose first correct match is within the top ``rank``."""
        if self.num_mated == 0:
            return float("nan")
        return 100.0 * float(self.cmc[min(rank, self.gallery_size) - 1])

    def metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {f"rank-{r}": self.rank_accuracy(r) for r in self.report_ranks}
        ap = self.average_precision[self.ranks > 0]
        out["mAP"] = 100.0 * float(ap.mean()) if len(ap) else float("nan")
        out["num_probes"] = int(len(self.ranks))
        out["num_mated_probes"] = self.num_mated
        out["num_unmated_probes"] = self.num_unmated
        out["gallery_size"] = int(self.gallery_size)
        return out


def identification_from_scores(
    scores: torch.Tensor, mated: torch.Tensor, ties: str = "pessimistic"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of the first correct match and average precision for each row of a [P, G] score matrix.

    ``mated[p, g]`` says gallery entry g has probe p's identity. Ties between a correct and a wrong entry are
    broken against the probe (``"pessimistic"``) or for it (``"optimistic"``); with continuous scores ties do
    not occur and both agree with an argsort. AP is the non-interpolated average precision (what
    ``sklearn.metrics.average_precision_score`` computes, tied scores grouped). Unmated rows: rank 0, AP NaN.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"`ties` must be 'pessimistic' or 'optimistic', got {ties!r}.")
    if scores.shape != mated.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mated mask {tuple(mated.shape)} differ in shape.")
    num_rows, gallery = scores.shape
    num_rel = mated.sum(dim=1)
    is_mated = num_rel > 0
    ranks = torch.zeros(num_rows, dtype=torch.long)
    ap = torch.full((num_rows,), float("nan"), dtype=torch.float64)
    if not bool(is_mated.any()):
        return ranks, ap
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype)
    rel_scores = torch.where(mated, scores, neg_inf)
    k = int(num_rel.max())
    rel_desc = torch.topk(rel_scores, k, dim=1).values  # [P, k], -inf padding after the real ones
    best = rel_desc[:, 0:1]
    wrong = ~mated
    above = (scores >= best) if ties == "pessimistic" else (scores > best)
    ranks = torch.where(is_mated, 1 + (above & wrong).sum(dim=1), torch.zeros_like(ranks))

    # AP: for each relevant item, (#relevant with score >= s) / (#items with score >= s).
    if k <= 32:  # few relevant entries per probe (face galleries): direct counts beat a full sort
        n_all_ge = (scores[:, None, :] >= rel_desc[:, :, None]).sum(dim=2)
    else:
        ascending = torch.sort(scores, dim=1).values.contiguous()
        n_all_ge = gallery - torch.searchsorted(ascending, rel_desc.contiguous(), right=False)
    rel_asc = rel_desc.flip(1).contiguous()
    n_rel_ge = k - torch.searchsorted(rel_asc, rel_desc.contiguous(), right=False)
    valid = torch.arange(k)[None, :] < num_rel[:, None]
    precision = n_rel_ge.double() / n_all_ge.clamp_min(1).double()
    ap_all = (precision * valid).sum(dim=1) / num_rel.clamp_min(1).double()
    ap = torch.where(is_mated, ap_all, ap)
    return ranks, ap


@torch.no_grad()
def closed_set_identification(
    probe_embeddings: np.ndarray | torch.Tensor,
    probe_labels: Sequence[int] | np.ndarray,
    gallery_embeddings: np.ndarray | torch.Tensor,
    gallery_labels: Sequence[int] | np.ndarray,
    ranks: Sequence[int] = (1, 5, 10, 20),
    ties: str = "pessimistic",
    chunk_size: int = 256,
) -> IdentificationResult:
    """Closed-set identification with inner-product scores on L2-normalised embeddings (CVLface TinyFace).

    Probes whose identity has no gallery entry are counted (``num_unmated_probes``) and left out of CMC and
    mAP, as in CVLface. Gallery distractors carry :data:`DISTRACTOR_LABEL`. Works in probe chunks so a
    160k-image gallery never needs the full score matrix in memory.
    """
    probes = l2_normalize(_as_2d_float("probe_embeddings", probe_embeddings).float())
    gallery = l2_normalize(_as_2d_float("gallery_embeddings", gallery_embeddings).float())
    if probes.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"probe embeddings have dimension {probes.shape[1]} but gallery embeddings {gallery.shape[1]}."
        )
    p_labels = torch.from_numpy(_as_1d_labels("probe_labels", probe_labels, probes.shape[0]))
    g_labels = torch.from_numpy(_as_1d_labels("gallery_labels", gallery_labels, gallery.shape[0]))
    if bool((p_labels == DISTRACTOR_LABEL).any()):
        raise ValueError(f"probe labels must not use the distractor label {DISTRACTOR_LABEL}.")
    bad = [r for r in ranks if int(r) < 1]
    if bad:
        raise ValueError(f"ranks must be >= 1, got {bad}.")
    all_ranks, all_ap = [], []
    for start in range(0, probes.shape[0], chunk_size):
        chunk = probes[start : start + chunk_size]
        scores = chunk @ gallery.T
        mated = p_labels[start : start + chunk_size, None] == g_labels[None, :]
        r, ap = identification_from_scores(scores, mated, ties=ties)
        all_ranks.append(r)
        all_ap.append(ap)
    return IdentificationResult(
        ranks=torch.cat(all_ranks).numpy(),
        average_precision=torch.cat(all_ap).numpy(),
        gallery_size=int(gallery.shape[0]),
        report_ranks=tuple(int(r) for r in ranks),
    )


# ----------------------------------------------------------------------------------------------------
# ROC and TAR@FAR
# ----------------------------------------------------------------------------------------------------


def _check_binary(labels: np.ndarray | Sequence[bool], scores: np.ndarray | Sequence[float]):
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D arrays of the same length.")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be boolean or 0/1 (1 = same identity).")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values.")
    if y.all() or not y.any():
        raise ValueError("a ROC needs both genuine (same identity) and impostor pairs; got only one kind.")
    return y, s


def roc_curve(
    labels: np.ndarray | Sequence[bool], scores: np.ndarray | Sequence[float], drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of a similarity score (higher = more likely the same identity): (fpr, tpr, thresholds).

    One point per distinct score, accepting ``score >= threshold``, starting at (0, 0) with an infinite
    threshold: the same points as ``sklearn.metrics.roc_curve`` (which CVLface uses), with which it also
    shares ``drop_intermediate`` (drop collinear points).
    """
    y, s = _check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_group].astype(np.float64)
    fps = (last_of_group + 1 - tps).astype(np.float64)
    thresholds = s[last_of_group]
    if drop_intermediate and len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def tar_at_far(
    fpr: np.ndarray, tpr: np.ndarray, fars: Sequence[float] = IJB_FARS, method: str = "nearest"
) -> dict[float, float]:
    """True-accept rate (percent) at each target false-accept rate.

    ``"nearest"`` reads the ROC point whose FAR is closest to the target (the largest TAR among equally close
    points): the insightface / CVLface rule the paper's IJB numbers use. ``"at_most"`` takes the best TAR
    whose FAR does not exceed the target (stricter; never over the budget).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    out: dict[float, float] = {}
    for far in fars:
        if method == "nearest":
            gap = np.abs(fpr - far)
            # Reverse so that argmin's first hit is the highest-TAR point among equally close ones.
            idx = len(gap) - 1 - int(np.argmin(gap[::-1]))
            out[float(far)] = 100.0 * float(tpr[idx])
        elif method == "at_most":
            ok = fpr <= far
            out[float(far)] = 100.0 * float(tpr[ok].max()) if ok.any() else 0.0
        else:
            raise ValueError(f"`method` must be 'nearest' or 'at_most', got {method!r}.")
    return out


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def far_label(far: float) -> str:
    """``1e-04`` style key, stable across platforms."""
    return f"{far:.0e}"


# ----------------------------------------------------------------------------------------------------
# 1:1 verification, k-fold accuracy (LFW-style .bin benchmarks)
# ----------------------------------------------------------------------------------------------------


def default_verification_thresholds() -> np.ndarray:
    """Squared-L2 thresholds 0, 0.01, ..., 3.99 (insightface)."""
    return np.arange(0, 4, 0.01)


@dataclass
class KFoldVerificationResult:
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray

    def metrics(self) -> dict[str, float | int]:
        return {
            "accuracy": 100.0 * float(self.fold_accuracies.mean()),
            "accuracy_std": 100.0 * float(self.fold_accuracies.std()),
            "threshold": float(self.fold_thresholds.mean()),
            "num_folds": int(len(self.fold_accuracies)),
        }


def kfold_verification_accuracy(
    distances: np.ndarray | Sequence[float],
    is_same: np.ndarray | Sequence[bool],
    n_folds: int = 10,
    thresholds: np.ndarray | None = None,
) -> KFoldVerificationResult:
    """k-fold accuracy: for each fold, the threshold that is best on the other folds, scored on this one.

    A pair is predicted "same" when ``distance < threshold``. Folds are contiguous and unshuffled (sklearn
    ``KFold(n_folds, shuffle=False)``: the first ``n % k`` folds are one longer); the first best threshold
    wins.
    Accuracy std is the population std over folds (numpy default), as insightface reports it.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(is_same)
    if d.ndim != 1 or y.shape != d.shape:
        raise ValueError(f"distances {d.shape} and is_same {y.shape} must be 1-D arrays of the same length.")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("is_same must be boolean or 0/1.")
        y = y.astype(bool)
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or infinite values.")
    if n_folds < 2 or len(d) < n_folds:
        raise ValueError(f"{n_folds}-fold verification needs at least {max(n_folds, 2)} pairs, got {len(d)}.")
    thr = default_verification_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    correct = (d[:, None] < thr[None, :]) == y[:, None]  # [n, T]
    folds = np.array_split(np.arange(len(d)), n_folds)
    accs, best_thr = [], []
    total_correct = correct.sum(axis=0)
    for test in folds:
        test_correct = correct[test].sum(axis=0)
        train_acc = (total_correct - test_correct) / (len(d) - len(test))
        best = int(np.argmax(train_acc))
        accs.append(test_correct[best] / len(test))
        best_thr.append(thr[best])
    return KFoldVerificationResult(np.asarray(accs, dtype=np.float64), np.asarray(best_thr, dtype=np.float64))


def squared_l2(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Row-wise squared Euclidean distance (0..4 between unit vectors)."""
    a_t = torch.as_tensor(a, dtype=torch.float64)
    b_t = torch.as_tensor(b, dtype=torch.float64)
    if a_t.shape != b_t.shape:
        raise ValueError(f"paired embeddings differ in shape: {tuple(a_t.shape)} vs {tuple(b_t.shape)}.")
    return ((a_t - b_t) ** 2).sum(dim=1).numpy()


# ----------------------------------------------------------------------------------------------------
# IJB-B / IJB-C templates
# ----------------------------------------------------------------------------------------------------


def template_features(
    image_features: np.ndarray | torch.Tensor, templates: np.ndarray, medias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Template features: images averaged within each media, media summed, the sum L2-normalised.

    ``image_features`` are the per-image features with their norm kept (the insightface "norm score" mode,
    optionally already weighted by a detector score). Returns (sorted unique template ids, [T, D] unit rows).
    """
    feats = np.asarray(image_features, dtype=np.float64)
    templates = np.asarray(templates)
    medias = np.asarray(medias)
    if feats.ndim != 2 or templates.shape != (feats.shape[0],) or medias.shape != (feats.shape[0],):
        raise ValueError(
            f"template_features needs features [N, D] with N template ids and N media ids; got "
            f"{feats.shape}, "
            f"{templates.shape}, {medias.shape}."
        )
    pairs = np.stack([templates.astype(np.int64), medias.astype(np.int64)], axis=1)
    tm, tm_index = np.unique(pairs, axis=0, return_inverse=True)
    tm_index = tm_index.reshape(-1)
    media_sum = np.zeros((len(tm), feats.shape[1]))
    np.add.at(media_sum, tm_index, feats)
    media_mean = media_sum / np.bincount(tm_index, minlength=len(tm))[:, None]
    uniq_t, t_index = np.unique(tm[:, 0], return_inverse=True)
    template_sum = np.zeros((len(uniq_t), feats.shape[1]))
    np.add.at(template_sum, t_index.reshape(-1), media_mean)
    norms = np.linalg.norm(template_sum, axis=1, keepdims=True)
    return uniq_t, template_sum / np.maximum(norms, 1e-12)


def template_pair_scores(
    template_ids: np.ndarray,
    template_feats: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    chunk: int = 65536,
) -> np.ndarray:
    """Cosine similarity of each template pair (t1[i], t2[i]); chunked so 15M IJB-C pairs fit in memory."""
    template_ids = np.asarray(template_ids)
    t1, t2 = np.asarray(t1), np.asarray(t2)
    missing = np.setdiff1d(np.r_[t1, t2], template_ids)
    if len(missing):
        raise ValueError(
            f"{len(missing)} template ids in the pair list have no images in the media list, "
            f"e.g. {missing[:5].tolist()}."
        )
    order = np.argsort(template_ids, kind="stable")
    sorted_ids = template_ids[order]
    i1 = torch.from_numpy(order[np.searchsorted(sorted_ids, t1)])
    i2 = torch.from_numpy(order[np.searchsorted(sorted_ids, t2)])
    feats = torch.as_tensor(np.asarray(template_feats, dtype=np.float32))
    out = np.empty(len(t1))
    for s in range(0, len(t1), chunk):
        out[s : s + chunk] = (feats[i1[s : s + chunk]] * feats[i2[s : s + chunk]]).sum(dim=1).double().numpy()
    return out
