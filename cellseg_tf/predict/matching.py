"""Instance scores: IoU matching of labelled objects, precision/recall/F1 and AP at IoU thresholds.

Label images are (H, W) integer arrays: 0 = background, every other value one object (values need not be
consecutive). Matching follows StarDist's `matching` (Schmidt et al. 2018): a one-to-one assignment that first
maximises the number of pairs with IoU >= threshold and, among those, the summed IoU (Hungarian algorithm via
scipy.optimize.linear_sum_assignment). For thresholds >= 0.5 the matching is unique anyway (an object can overlap at
most one other object by more than half of their union).

Empty-image convention (same as the pixel metrics): a ratio whose denominator is 0 is 1.0, so an image with no true
and no predicted object scores precision = recall = F1 = AP = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAP_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))  # 0.50, 0.55, ..., 0.95


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 1.0


def consecutive_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map labels to consecutive 0..n (0 stays background); returns (flat int64 labels, n).

    A lookup table over the label values (O(pixels)) when they are small non-negative integers, else np.unique.
    """
    flat = np.asarray(labels).ravel()
    if flat.size and np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and flat.max() < 2 ** 24:
        present = np.bincount(flat.astype(np.int64)) > 0
        present[0] = False
        lut = np.cumsum(present)
        return lut[flat], int(lut[-1])
    vals, inv = np.unique(flat, return_inverse=True)
    if vals.size and vals[0] == 0:
        return inv.astype(np.int64), int(vals.size - 1)
    return inv.astype(np.int64) + 1, int(vals.size)


def iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray,
               true_consecutive: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """IoU of every (true object, predicted object) pair: (n_true, n_pred) float64, from one pixel contingency table.

    true_labels, pred_labels: (H, W) integer label images of the same shape. true_consecutive:
    `consecutive_labels(true_labels)` when one truth is scored against many predictions (tuning), computed once.
    """
    if np.shape(true_labels) != np.shape(pred_labels):
        raise ValueError(f"label images differ in shape: truth {np.shape(true_labels)} vs "
                         f"prediction {np.shape(pred_labels)}")
    t, nt = true_consecutive if true_consecutive is not None else consecutive_labels(true_labels)
    p, np_ = consecutive_labels(pred_labels)
    overlap = np.bincount(t * (np_ + 1) + p, minlength=(nt + 1) * (np_ + 1)).reshape(nt + 1, np_ + 1)
    area_t = overlap.sum(axis=1, keepdims=True)[1:]
    area_p = overlap.sum(axis=0, keepdims=True)[:, 1:]
    inter = overlap[1:, 1:].astype(np.float64)
    union = area_t + area_p - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_ious(iou: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching on an (n_true, n_pred) IoU matrix: (true_idx, pred_idx) of the pairs with IoU >= threshold.

    Maximises the number of matched pairs, then their summed IoU (the tie-break weight is < 1 in total, so it never
    trades a pair away).
    """
    from scipy.optimize import linear_sum_assignment

    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    ok = iou >= threshold
    if not ok.any():
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    cost = -ok.astype(np.float64) - iou / (2.0 * min(n_true, n_pred) + 1.0)
    ti, pi = linear_sum_assignment(cost)
    keep = ok[ti, pi]
    return ti[keep], pi[keep]


@dataclass(frozen=True)
class InstanceScores:
    """Instance counts and scores at one IoU threshold (see module docstring for the empty convention)."""

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    mean_matched_iou: float  # mean IoU of the matched pairs (NaN when none)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.n_true)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, self.n_true + self.n_pred)

    @property
    def average_precision(self) -> float:
        """TP / (TP + FP + FN), the per-threshold "AP" of the DSB 2018 challenge, StarDist and Cellpose."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)


def _scores_from_iou(iou: np.ndarray, threshold: float) -> InstanceScores:
    ti, pi = match_ious(iou, threshold)
    mean_iou = float(iou[ti, pi].mean()) if ti.size else float("nan")
    return InstanceScores(float(threshold), iou.shape[0], iou.shape[1], int(ti.size), mean_iou)


def instance_scores(true_labels: np.ndarray, pred_labels: np.ndarray, threshold: float = 0.5) -> InstanceScores:
    """Match objects of two (H, W) label images at IoU >= threshold and count TP/FP/FN (see `InstanceScores`)."""
    return _scores_from_iou(iou_matrix(true_labels, pred_labels), threshold)


def mean_average_precision(true_labels: np.ndarray, pred_labels: np.ndarray,
                           thresholds=MAP_THRESHOLDS) -> tuple[float, dict[float, float]]:
    """mAP over IoU thresholds 0.5:0.05:0.95 as StarDist/Cellpose report it: mean over t of TP/(TP + FP + FN) at t.

    Returns (mAP, {threshold: AP}). One IoU matrix serves every threshold.
    """
    iou = iou_matrix(true_labels, pred_labels)
    aps = {float(t): _scores_from_iou(iou, t).average_precision for t in thresholds}
    return float(np.mean(list(aps.values()))), aps


def tp_column(threshold: float) -> str:
    """Name of the per-image column counting true positives at one IoU threshold: 0.5 -> "tp_iou50"."""
    return f"tp_iou{int(round(threshold * 100))}"


def instance_metrics(true_labels: np.ndarray, pred_labels: np.ndarray, threshold: float = 0.5,
                     thresholds=MAP_THRESHOLDS) -> dict[str, float]:
    """Per-image instance row: instance_precision/recall/f1 at `threshold`, counts, matched IoU, ap50, map_50_95,
    and the TP count at every mAP threshold (`tp_column(t)`), so that a folder's AP can be summed over images."""
    iou = iou_matrix(true_labels, pred_labels)
    at = _scores_from_iou(iou, threshold)
    per_t = {float(t): _scores_from_iou(iou, t) for t in thresholds}
    ap50 = per_t[0.5].average_precision if 0.5 in per_t else _scores_from_iou(iou, 0.5).average_precision
    return {"instance_precision": at.precision, "instance_recall": at.recall, "instance_f1": at.f1,
            "n_true_instances": at.n_true, "n_pred_instances": at.n_pred, "instance_tp": at.tp,
            "matched_iou": at.mean_matched_iou,
            "ap50": ap50, "map_50_95": float(np.mean([s.average_precision for s in per_t.values()])),
            **{tp_column(t): s.tp for t, s in per_t.items()}}


def summed_instance_scores(n_true: int, n_pred: int, tp_by_threshold: dict[float, int],
                           threshold: float = 0.5) -> dict[str, float]:
    """Dataset-level instance scores from counts summed over images (StarDist's `matching_dataset` by_image=False):
    precision/recall/F1 at `threshold`, AP at 0.5 and mAP over the thresholds of `tp_by_threshold`, each
    TP / (TP + FP + FN) with FP = n_pred - TP, FN = n_true - TP."""
    tp = tp_by_threshold[threshold]
    aps = {t: _ratio(k, n_true + n_pred - k) for t, k in tp_by_threshold.items()}
    return {"instance_precision": _ratio(tp, n_pred), "instance_recall": _ratio(tp, n_true),
            "instance_f1": _ratio(2 * tp, n_true + n_pred), "instance_tp": int(tp),
            "instance_fp": int(n_pred - tp), "instance_fn": int(n_true - tp),
            "ap50": aps.get(0.5, float("nan")), "map_50_95": float(np.mean(list(aps.values())))}
