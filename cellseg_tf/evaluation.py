"""Per-image evaluation of binary predictions against manifest masks (numpy only).

Empty-mask convention: when a ratio's denominator is 0 (nothing to find and nothing predicted), it is 1.0.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import ImageReadError, read_mask
from .manifest import Sample


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 1.0


def binary_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """pred, truth: (H, W) {0, 1} (any nonzero = foreground) -> dice, iou, precision, recall, accuracy."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape} but truth is {truth.shape}")
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = float(np.count_nonzero(p & t))
    fp = float(np.count_nonzero(p & ~t))
    fn = float(np.count_nonzero(~p & t))
    tn = float(p.size) - tp - fp - fn
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "accuracy": _ratio(tp + tn, p.size)}


def prediction_path(pred_dir: str | os.PathLike, sample: Sample) -> Path:
    return Path(pred_dir) / f"{sample.stem}.png"


def evaluate_folder(pred_dir: str | os.PathLike, samples: list[Sample]):
    """One row per sample with a mask: image, prediction, dice, iou, precision, recall, accuracy (DataFrame).

    Raises FileNotFoundError naming the first missing prediction.
    """
    import pandas as pd

    rows = []
    for s in samples:
        if s.mask is None:
            continue
        pp = prediction_path(pred_dir, s)
        if not pp.is_file():
            raise FileNotFoundError(f"{pp}: no prediction for {s.image}")
        pred, truth = read_mask(pp), read_mask(s.mask)
        if pred.shape != truth.shape:
            raise ImageReadError(f"{pp}: prediction is {pred.shape[0]}×{pred.shape[1]} but mask {s.mask} is "
                                 f"{truth.shape[0]}×{truth.shape[1]}")
        rows.append({"image": s.image, "prediction": str(pp), **binary_scores(pred, truth)})
    if not rows:
        raise ValueError("no samples with masks to evaluate")
    return pd.DataFrame(rows)


def summarize(report) -> dict[str, float]:
    """Mean of each score column plus the count."""
    cols = [c for c in ("dice", "iou", "precision", "recall", "accuracy") if c in report]
    return {"n": int(len(report)), **{f"mean_{c}": float(report[c].mean()) for c in cols}}
