"""Instance scores: connected components, IoU matrix, optimal matching (incl. touching objects), P/R/F1 and mAP."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.instances import (MAP_THRESHOLDS, instance_metrics, instance_scores, iou_matrix, is_label_image,
                                  label_components, match_ious, mean_average_precision)


def test_components_connectivity():
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 1
    m[3:5, 3:5] = 1                               # touches the first square at a corner only
    assert label_components(m, connectivity=1).max() == 2   # 4-connectivity: separate
    assert label_components(m).max() == 1                   # default 8-connectivity (as skimage.measure.label)
    assert label_components(m).dtype == np.int32
    with pytest.raises(ValueError, match="connectivity"):
        label_components(m, connectivity=3)


def test_is_label_image():
    assert not is_label_image(np.array([[0, 255], [255, 0]]))
    assert not is_label_image(np.zeros((3, 3), np.int32))
    assert is_label_image(np.array([[0, 1], [2, 0]]))


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, (20, 20)) * (rng.random((20, 20)) > 0.3)
    p = rng.integers(0, 5, (20, 20)) * 3                     # non-consecutive labels 0, 3, 6, 9, 12
    got = iou_matrix(t, p)
    tv, pv = [v for v in np.unique(t) if v], [v for v in np.unique(p) if v]
    ref = np.array([[np.sum((t == a) & (p == b)) / np.sum((t == a) | (p == b)) for b in pv] for a in tv])
    np.testing.assert_allclose(got, ref)
    with pytest.raises(ValueError, match="shape"):
        iou_matrix(t, p[:5])


def _touching_truth():
    """Two touching cells of different size, as an instance label image (12×12): left 6 columns, right 4 columns."""
    t = np.zeros((12, 12), np.int32)
    t[2:10, 1:7] = 1
    t[2:10, 7:11] = 2
    return t


def test_touching_cells_merged_by_a_binary_prediction():
    t = _touching_truth()
    merged = label_components(t > 0)              # perfect pixels, but one blob
    assert merged.max() == 1
    s = instance_scores(t, merged)
    # the blob covers cell 1 with IoU 48/80 = 0.6 -> one TP; cell 2 (IoU 0.4) is missed
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert (s.precision, s.recall, s.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert s.mean_matched_iou == pytest.approx(0.6)


def test_touching_cells_split_correctly_and_with_a_shifted_border():
    t = _touching_truth()
    assert instance_scores(t, t).f1 == 1.0
    shifted = t.copy()
    shifted[2:10, 7] = 1                          # border one column to the right: IoUs 48/56 and 24/32
    s = instance_scores(t, shifted)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.mean_matched_iou == pytest.approx((48 / 56 + 24 / 32) / 2)
    # at threshold 0.8 only the big cell still matches
    assert instance_scores(t, shifted, threshold=0.8).tp == 1


def test_matching_is_optimal_not_greedy():
    # rows: true A, B; cols: predicted X, Y. Greedy (highest IoU first) takes A-X and then nothing fits;
    # the optimal one-to-one assignment at threshold 0.3 pairs A-Y and B-X.
    iou = np.array([[0.6, 0.35], [0.3, 0.0]])
    ti, pi = match_ious(iou, threshold=0.3)
    assert sorted(zip(ti.tolist(), pi.tolist())) == [(0, 1), (1, 0)]
    ti, pi = match_ious(iou, threshold=0.5)
    assert list(zip(ti.tolist(), pi.tolist())) == [(0, 0)]


def test_average_precision_over_thresholds():
    t = np.zeros((20, 20), np.int32)
    t[0:10, 0:10] = 1                             # 100 px
    t[12:17, 12:17] = 2                           # 25 px
    p = np.zeros_like(t)
    p[0:10, 0:8] = 5                              # IoU 80/100 = 0.8 with cell 1
    p[12:17, 12:16] = 7                           # IoU 20/25 = 0.8 with cell 2
    p[18:20, 0:2] = 9                             # a false positive
    m, aps = mean_average_precision(t, p)
    assert list(aps) == list(MAP_THRESHOLDS) and len(aps) == 10
    # t <= 0.8: TP=2, FP=1, FN=0 -> 2/3 (0.50 ... 0.80: 7 thresholds); above: 0/(0+3+2) = 0
    expected = [2 / 3 if thr <= 0.8 + 1e-9 else 0.0 for thr in MAP_THRESHOLDS]
    np.testing.assert_allclose(list(aps.values()), expected)
    assert m == pytest.approx(np.mean(expected))
    row = instance_metrics(t, p)
    assert row["ap50"] == pytest.approx(2 / 3) and row["map_50_95"] == pytest.approx(m)
    assert (row["n_true_instances"], row["n_pred_instances"], row["instance_tp"]) == (2, 3, 2)
    assert row["instance_precision"] == pytest.approx(2 / 3) and row["instance_recall"] == 1.0


def test_empty_conventions():
    empty = np.zeros((8, 8), np.int32)
    one = empty.copy()
    one[2:5, 2:5] = 1
    both = instance_scores(empty, empty)
    assert (both.precision, both.recall, both.f1, both.average_precision) == (1.0, 1.0, 1.0, 1.0)
    missed = instance_scores(one, empty)
    assert (missed.precision, missed.recall, missed.f1) == (1.0, 0.0, 0.0)
    spurious = instance_scores(empty, one)
    assert (spurious.precision, spurious.recall, spurious.f1) == (0.0, 1.0, 0.0)
    assert mean_average_precision(empty, empty)[0] == 1.0
    assert np.isnan(instance_metrics(one, empty)["matched_iou"])
