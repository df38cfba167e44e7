"""Evaluation metrics against hand-computed answers and sklearn cross-checks (no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from petal_peft.evaluation.metrics import (
    DISTRACTOR_LABEL,
    closed_set_identification,
    fuse_flip,
    identification_from_scores,
    kfold_verification_accuracy,
    roc_auc,
    roc_curve,
    squared_l2,
    tar_at_far,
    template_features,
    template_pair_scores,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def unit(angle_deg: float) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


# ------------------------------------------------------------------------------------------------ identification
def test_known_rank_positions_unmated_probe_and_distractor():
    # gallery labels: A=0, B=1, C=2, one distractor; rows are probes labelled A, B, C and E (absent).
    gallery_labels = torch.tensor([0, 1, DISTRACTOR_LABEL, 2])
    probe_labels = torch.tensor([0, 1, 2, 7])
    scores = torch.tensor(
        [
            [0.90, 0.50, 0.95, 0.10],  # A: the distractor beats the match -> rank 2
            [0.20, 0.80, 0.30, 0.10],  # B: rank 1
            [0.90, 0.80, 0.70, 0.10],  # C: last -> rank 4
            [0.90, 0.80, 0.70, 0.10],  # E: no gallery entry -> unmated
        ]
    )
    mated = probe_labels[:, None] == gallery_labels[None, :]
    ranks, ap = identification_from_scores(scores, mated)
    assert ranks.tolist() == [2, 1, 4, 0]
    np.testing.assert_allclose(ap[:3].numpy(), [1 / 2, 1.0, 1 / 4])
    assert math.isnan(float(ap[3]))


def test_cmc_and_map_from_embeddings_with_known_angles():
    # 2-D unit vectors: cosine falls with the angle, so ranks follow the angular order.
    gallery = torch.tensor([unit(10), unit(20), unit(40), unit(90), unit(-5)]) * torch.tensor([[3.0]])  # norms vary
    gallery_labels = [DISTRACTOR_LABEL, 0, 1, 2, 3]
    probes = torch.tensor([unit(0), unit(41), unit(89), unit(0)])
    probe_labels = [0, 1, 2, 9]  # probe 0: order -5(3), 10(d), 20(A) -> rank 3; probe 3 is unmated
    result = closed_set_identification(probes, probe_labels, gallery, gallery_labels, ranks=(1, 2, 3, 10))
    assert result.ranks.tolist() == [3, 1, 1, 0]
    m = result.metrics()
    assert m["rank-1"] == pytest.approx(200 / 3)
    assert m["rank-2"] == pytest.approx(200 / 3)
    assert m["rank-3"] == pytest.approx(100.0)
    assert m["rank-10"] == pytest.approx(100.0)  # beyond the gallery size: clamped
    assert m["mAP"] == pytest.approx(100 * (1 / 3 + 1 + 1) / 3)
    assert (m["num_mated_probes"], m["num_unmated_probes"], m["gallery_size"]) == (3, 1, 5)
    np.testing.assert_allclose(result.cmc, [2 / 3, 2 / 3, 1, 1, 1])


def test_average_precision_with_several_relevant_entries():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    mated = torch.tensor([[True, False, True, False, True]])
    _, ap = identification_from_scores(scores, mated)
    assert float(ap[0]) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ties_pessimistic_and_optimistic():
    scores = torch.tensor([[0.5, 0.5, 0.1]])
    mated = torch.tensor([[True, False, False]])
    pess, ap = identification_from_scores(scores, mated, ties="pessimistic")
    opt, _ = identification_from_scores(scores, mated, ties="optimistic")
    assert (int(pess[0]), int(opt[0])) == (2, 1)
    assert float(ap[0]) == pytest.approx(0.5)
    assert float(ap[0]) == pytest.approx(sklearn_metrics.average_precision_score([1, 0, 0], [0.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match="ties"):
        identification_from_scores(scores, mated, ties="random")


def test_identification_matches_argsort_and_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    probes = rng.normal(size=(25, 8)).astype(np.float32)
    g_labels = rng.integers(0, 15, size=60)
    g_labels[:10] = DISTRACTOR_LABEL
    p_labels = rng.integers(0, 18, size=25)  # some identities are absent from the gallery
    result = closed_set_identification(probes, p_labels, gallery, g_labels, chunk_size=7)
    gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    pn = probes / np.linalg.norm(probes, axis=1, keepdims=True)
    scores = pn @ gn.T
    for i in range(len(probes)):
        rel = g_labels == p_labels[i]
        if not rel.any():
            assert result.ranks[i] == 0
            continue
        order = np.argsort(-scores[i], kind="stable")
        assert result.ranks[i] == 1 + int(np.flatnonzero(rel[order])[0])
        ap = sklearn_metrics.average_precision_score(rel, scores[i])
        assert result.average_precision[i] == pytest.approx(ap, abs=1e-6)
    assert result.num_unmated == int(sum(not (g_labels == p).any() for p in p_labels))
    assert result.num_unmated > 0


def test_identification_rejects_bad_input():
    good = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        closed_set_identification(np.full((2, 3), np.nan, np.float32), [0, 1], good, [0, 1, 2])
    with pytest.raises(ValueError, match="dimension"):
        closed_set_identification(np.ones((2, 4), np.float32), [0, 1], good, [0, 1, 2])
    with pytest.raises(ValueError, match="2 entries but there are 3"):
        closed_set_identification(good, [0, 1], good, [0, 1, 2])
    with pytest.raises(ValueError, match="distractor"):
        closed_set_identification(good, [0, 1, DISTRACTOR_LABEL], good, [0, 1, 2])


# ---------------------------------------------------------------------------------------------------------- ROC
def test_known_roc_and_tar_at_far():
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.55, 0.3]
    fpr, tpr, thr = roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, np.array([0, 0, 0, 1, 1, 2, 3]) / 3)
    np.testing.assert_allclose(tpr, np.array([0, 1, 2, 2, 3, 3, 3]) / 3)
    assert thr[0] == np.inf and thr[-1] == pytest.approx(0.3)
    assert roc_auc(fpr, tpr) == pytest.approx(1 - 1 / 9)  # one impostor ranked above one genuine pair
    nearest = tar_at_far(fpr, tpr, (0.1, 0.3), method="nearest")
    at_most = tar_at_far(fpr, tpr, (0.1, 0.3), method="at_most")
    assert nearest[0.1] == pytest.approx(200 / 3)  # FAR 0 points are nearest; best TAR among them
    assert nearest[0.3] == pytest.approx(100.0)  # FAR 1/3 is nearest to 0.3, and overshoots it
    assert at_most[0.3] == pytest.approx(200 / 3)  # never over the FAR budget
    with pytest.raises(ValueError, match="method"):
        tar_at_far(fpr, tpr, (0.1,), method="interp")


@pytest.mark.parametrize("drop", [False, True])
def test_roc_matches_sklearn_with_ties(drop):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes many ties
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=drop)
    s_fpr, s_tpr, s_thr = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, s_fpr)
    np.testing.assert_allclose(tpr, s_tpr)
    np.testing.assert_allclose(thr[1:], s_thr[1:])
    assert roc_auc(fpr, tpr) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))


def test_roc_needs_both_classes_and_finite_scores():
    with pytest.raises(ValueError, match="both genuine"):
        roc_curve([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_curve([1, 0], [np.nan, 0.3])
    with pytest.raises(ValueError, match="same length"):
        roc_curve([1, 0, 1], [0.1, 0.3])


# ------------------------------------------------------------------------------------------------- verification
def test_kfold_accuracy_hand_computed():
    result = kfold_verification_accuracy(
        [0.1, 0.6, 0.4, 0.9], [True, True, False, False], n_folds=2, thresholds=np.array([0.25, 0.5, 0.75])
    )
    # fold 1 trains on two impostors -> threshold 0.25 -> 1 of 2 right; fold 2 trains on two genuine pairs ->
    # threshold 0.75 -> 1 of 2 right.
    np.testing.assert_allclose(result.fold_accuracies, [0.5, 0.5])
    np.testing.assert_allclose(result.fold_thresholds, [0.25, 0.75])
    m = result.metrics()
    assert (m["accuracy"], m["accuracy_std"], m["threshold"], m["num_folds"]) == (50.0, 0.0, 0.5, 2)


def test_kfold_matches_reference_loop_with_sklearn_kfold():
    model_selection = pytest.importorskip("sklearn.model_selection")
    rng = np.random.default_rng(2)
    n = 203  # uneven folds
    same = rng.integers(0, 2, size=n).astype(bool)
    dist = np.clip(rng.normal(1.4 - 0.6 * same, 0.35), 0, 4)
    thresholds = np.arange(0, 4, 0.01)
    ours = kfold_verification_accuracy(dist, same)
    accs = []
    for train, test in model_selection.KFold(n_splits=10, shuffle=False).split(dist):
        train_acc = [np.mean((dist[train] < t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == same[test]))
    np.testing.assert_allclose(ours.fold_accuracies, accs)
    assert 60 < ours.metrics()["accuracy"] < 100


def test_kfold_bad_input():
    with pytest.raises(ValueError, match="at least 10 pairs"):
        kfold_verification_accuracy([0.1] * 5, [True] * 5)
    with pytest.raises(ValueError, match="same length"):
        kfold_verification_accuracy([0.1] * 12, [True] * 11)
    with pytest.raises(ValueError, match="NaN"):
        kfold_verification_accuracy([np.nan] * 12, [True] * 12)


def test_squared_l2_between_unit_vectors():
    a = torch.tensor([unit(0), unit(0), unit(0)])
    b = torch.tensor([unit(0), unit(90), unit(180)])
    np.testing.assert_allclose(squared_l2(a, b), [0.0, 2.0, 4.0], atol=1e-12)


# -------------------------------------------------------------------------------------------------------- fusion
def test_flip_fusion_is_norm_weighted_sum_of_unit_features():
    f = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    g = torch.tensor([[0.0, 1.0], [-1.0, -1.0 + 1e-3]])
    fused, norms = fuse_flip(f, g)
    n1, n2 = f.norm(dim=1, keepdim=True), g.norm(dim=1, keepdim=True)
    expected = n1 * f / n1 + n2 * g / n2
    torch.testing.assert_close(fused, expected / expected.norm(dim=1, keepdim=True))
    torch.testing.assert_close(norms, expected.norm(dim=1))
    torch.testing.assert_close(fused[0], torch.tensor([3.0, 1.0]) / math.sqrt(10))
    with pytest.raises(ValueError, match="equal shapes"):
        fuse_flip(f, g[:1])


# --------------------------------------------------------------------------------------------------------- IJB
def test_template_features_mean_within_media_sum_across_media():
    feats = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 5.0]])
    templates = np.array([7, 7, 7, 3])
    medias = np.array([10, 10, 11, 12])
    ids, tf = template_features(feats, templates, medias)
    assert ids.tolist() == [3, 7]
    expected_7 = np.array([1.0, 1.0]) + np.array([1.0, 0.0])  # mean of media 10, plus media 11
    np.testing.assert_allclose(tf[1], expected_7 / np.linalg.norm(expected_7))
    np.testing.assert_allclose(tf[0], [0.0, 1.0])
    scores = template_pair_scores(ids, tf, np.array([7, 3]), np.array([3, 3]))
    np.testing.assert_allclose(scores, [expected_7[1] / np.linalg.norm(expected_7), 1.0])
    with pytest.raises(ValueError, match="no images"):
        template_pair_scores(ids, tf, np.array([7]), np.array([99]))
