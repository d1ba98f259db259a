"""Per-image evaluation of predictions against manifest masks (numpy / scipy / scikit-image / OpenCV, no TensorFlow).

Scores come in named groups (a registry, `METRIC_GROUPS`), each a function of one `ImagePair` returning a dict:

  pixel     dice, iou, precision, recall, accuracy, f1 (pixel F1 = Dice for binary masks)
  ssim      SSIM of the two binary masks (scikit-image, 7×7 window, data_range 1)
  distance  hausdorff, hausdorff95 (pixels, on the mask boundaries, via Euclidean distance transforms)
  boundary  boundary_dice (Beker et al.: Dice of Canny edges dilated by a 7×7 kernel)
  instance  instance_precision/recall/f1 at IoU >= 0.5, counts, matched_iou, ap50, map_50_95 and the TP count at
            every IoU threshold 0.5:0.95 (see `instances`); `summarize` adds dataset-level scores from summed counts

Empty-mask conventions (the same everywhere, and in `metrics`/`instances`):
  * a ratio whose denominator is 0 is 1.0: truth and prediction both empty -> dice = iou = precision = recall = 1;
    one empty and the other not -> 0 for every ratio that has TP in its numerator and a nonzero denominator;
  * hausdorff/hausdorff95: both empty -> 0.0; exactly one empty -> NaN (undefined; summaries skip it, where
    scikit-image would give inf, which would make every mean inf);
  * ssim of constant images is 1.0 when identical (scikit-image's convention).

Instance labels: predicted cells are the label TIFF `predict --instances` saved beside the mask
(PRED/<stem>_instances.tif) when there is one. Otherwise, where the manifest mask (or the prediction file) holds more
than one distinct nonzero value it is read as an instance label image (`io.read_mask(path, instances=True)`); else its
objects are the connected components (8-connectivity by default) of the binary mask, so touching cells in a binary
mask count as one object. Columns `truth_instances` / `pred_instances` say which ("saved", "labels" or
"components") for each row. A binary mask saved
with several grey levels (anti-aliased edges) would be taken for a label image: save binary masks with one value.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..predict.instances import mask_labels
from ..predict.matching import MAP_THRESHOLDS, instance_metrics, summed_instance_scores, tp_column
from ..data.io import ImageReadError, read_mask
from ..data.manifest import Sample
from ..predict.options import output_paths


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 1.0


def _check_shapes(pred: np.ndarray, truth: np.ndarray) -> None:
    if np.shape(pred) != np.shape(truth):
        raise ValueError(f"prediction is {np.shape(pred)} but truth is {np.shape(truth)}")


# --------------------------------------------------------------------------------------------------------------
# Single metrics on (H, W) masks (any nonzero = foreground)
# --------------------------------------------------------------------------------------------------------------

def binary_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """pred, truth: (H, W) {0, 1} (any nonzero = foreground) -> dice, iou, precision, recall, accuracy, f1."""
    _check_shapes(pred, truth)
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = float(np.count_nonzero(p & t))
    fp = float(np.count_nonzero(p & ~t))
    fn = float(np.count_nonzero(~p & t))
    tn = float(p.size) - tp - fp - fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"dice": dice, "iou": _ratio(tp, tp + fp + fn), "precision": precision, "recall": recall,
            "accuracy": _ratio(tp + tn, p.size), "f1": dice}


def mask_ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of two binary masks as float {0, 1}, data_range 1, skimage's 7×7 uniform window.

    Masks smaller than 7 px use the largest odd window that fits; below 3 px it is NaN. On sparse masks SSIM is
    dominated by the agreeing background (Das et al. 2025 report 0.99 next to Dice 0.1): read it beside Dice, not
    alone.
    """
    from skimage.metrics import structural_similarity

    _check_shapes(pred, truth)
    win = min(7, min(np.shape(pred)[:2]))
    win -= 1 - win % 2
    if win < 3:
        return float("nan")
    return float(structural_similarity((np.asarray(pred) > 0).astype(np.float64),
                                       (np.asarray(truth) > 0).astype(np.float64), data_range=1.0, win_size=win))


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask: foreground pixels with a 4-neighbour background pixel (image edge included)."""
    from scipy import ndimage

    m = np.asarray(mask) > 0
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (pixels) from every boundary pixel of `a` to the nearest boundary pixel of `b`, and back.

    Exact Euclidean distances from two distance transforms cropped to the bounding box of both boundaries, so big
    images cost O(pixels), not O(boundary²). Both masks must be non-empty.
    """
    from scipy import ndimage

    ba, bb = mask_boundary(a), mask_boundary(b)
    rows = np.flatnonzero((ba | bb).any(axis=1))
    cols = np.flatnonzero((ba | bb).any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    ba, bb = ba[box], bb[box]
    d_to_b = ndimage.distance_transform_edt(~bb)
    d_to_a = ndimage.distance_transform_edt(~ba)
    return d_to_b[ba], d_to_a[bb]


def hausdorff_distances(pred: np.ndarray, truth: np.ndarray, percentile: float = 95.0,
                        empty: float = float("nan")) -> tuple[float, float]:
    """(Hausdorff, Hausdorff-percentile) in pixels between the boundaries of two binary (H, W) masks.

    Hausdorff = max over both directions of the distance from a boundary pixel to the nearest boundary pixel of
    the other mask (= skimage.metrics.hausdorff_distance of the two boundary images); HD95 = 95th percentile of both
    directions' distances pooled (MedPy's `hd95`). Both empty -> (0, 0); exactly one empty -> (empty, empty).
    """
    _check_shapes(pred, truth)
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if not p.any() and not t.any():
        return 0.0, 0.0
    if not p.any() or not t.any():
        return float(empty), float(empty)
    d_pt, d_tp = surface_distances(p, t)
    both = np.concatenate([d_pt, d_tp])
    return float(both.max()), float(np.percentile(both, percentile))


def boundary_dice(pred: np.ndarray, truth: np.ndarray, kernel: int = 7) -> float:
    """Beker et al. boundary Dice: Canny edges of each mask (OpenCV, thresholds 100/200 on 0/255), dilated with a
    kernel×kernel square, then Dice of the two bands. Both edge-free (e.g. both empty) -> 1.0; one edge-free -> 0.0.
    """
    import cv2

    _check_shapes(pred, truth)
    se = np.ones((kernel, kernel), np.uint8)
    bands = [cv2.dilate(cv2.Canny((np.asarray(m) > 0).astype(np.uint8) * 255, 100, 200), se) > 0
             for m in (pred, truth)]
    return binary_scores(bands[0], bands[1])["dice"]


# --------------------------------------------------------------------------------------------------------------
# Metric groups (registry) over one image pair
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ImagePair:
    """One prediction/truth pair: binary (H, W) bool masks and (H, W) int32 instance labels (0 = background)."""

    pred: np.ndarray
    truth: np.ndarray
    pred_labels: np.ndarray
    truth_labels: np.ndarray


def _group_pixel(pair: ImagePair) -> dict[str, float]:
    return binary_scores(pair.pred, pair.truth)


def _group_ssim(pair: ImagePair) -> dict[str, float]:
    return {"ssim": mask_ssim(pair.pred, pair.truth)}


def _group_distance(pair: ImagePair) -> dict[str, float]:
    hd, hd95 = hausdorff_distances(pair.pred, pair.truth)
    return {"hausdorff": hd, "hausdorff95": hd95}


def _group_boundary(pair: ImagePair) -> dict[str, float]:
    return {"boundary_dice": boundary_dice(pair.pred, pair.truth)}


def _group_instance(pair: ImagePair) -> dict[str, float]:
    return instance_metrics(pair.truth_labels, pair.pred_labels)


METRIC_GROUPS: dict[str, Callable[[ImagePair], dict[str, float]]] = {
    "pixel": _group_pixel, "ssim": _group_ssim, "distance": _group_distance, "boundary": _group_boundary,
    "instance": _group_instance,
}

#: Score columns `summarize` averages, in report order.
SCORE_COLUMNS = ("dice", "iou", "precision", "recall", "accuracy", "f1", "ssim", "hausdorff", "hausdorff95",
                 "boundary_dice", "instance_precision", "instance_recall", "instance_f1", "ap50", "map_50_95")


def _as_labels(arr: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(binary mask, instance labels, "labels"|"components") from a mask read with instances=True."""
    arr = np.asarray(arr)
    return (arr > 0, *mask_labels(arr, connectivity))


def image_scores(pred: np.ndarray, truth: np.ndarray, groups=tuple(METRIC_GROUPS), connectivity: int = 2,
                 pred_labels: np.ndarray | None = None) -> dict[str, float | str]:
    """All scores of one image: pred, truth (H, W) binary masks or instance label images (see module docstring).

    pred_labels: (H, W) int labels the prediction saved beside its mask (`predict --instances`); they are the
    predicted cells for the instance scores (pred_instances = "saved"), while pixel scores stay on `pred`.
    groups: names from METRIC_GROUPS. Returns one flat dict (plus truth_instances / pred_instances when "instance"
    is among the groups).
    """
    _check_shapes(pred, truth)
    unknown = set(groups) - set(METRIC_GROUPS)
    if unknown:
        raise KeyError(f"unknown metric group(s) {sorted(unknown)}; available: {', '.join(METRIC_GROUPS)}")
    p, pl, p_src = _as_labels(pred, connectivity)
    if pred_labels is not None:
        _check_shapes(pred_labels, truth)
        pl, p_src = np.asarray(pred_labels).astype(np.int32), "saved"
    t, tl, t_src = _as_labels(truth, connectivity)
    pair = ImagePair(p, t, pl, tl)
    row: dict[str, float | str] = {}
    for g in groups:
        row.update(METRIC_GROUPS[g](pair))
    if "instance" in groups:
        row["truth_instances"], row["pred_instances"] = t_src, p_src
    return row


def prediction_path(pred_dir: str | os.PathLike, sample: Sample) -> Path:
    """Where `batch_predict.predict_batch` writes the mask of `sample` (`predict.options.output_paths`)."""
    return output_paths(pred_dir, sample.image)["mask"]


def instances_path(pred_dir: str | os.PathLike, sample: Sample) -> Path:
    """Where `predict --instances` writes the cells of `sample` (`predict.options.output_paths`)."""
    return output_paths(pred_dir, sample.image, instances=True)["instances"]


def _saved_labels(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The saved instance labels at `path` as (H, W) int32, None when there are none; a size mismatch is an error."""
    if not path.is_file():
        return None
    labels = read_mask(path, instances=True)
    if labels.shape != shape:
        raise ImageReadError(f"{path}: instance labels are {labels.shape[0]}×{labels.shape[1]} but the mask is "
                             f"{shape[0]}×{shape[1]}")
    return labels


def evaluate_folder(pred_dir: str | os.PathLike, samples: list[Sample], groups=tuple(METRIC_GROUPS),
                    connectivity: int = 2, on_error: str = "raise", mask_threshold: float = 0, verbose: int = 1):
    """One DataFrame row per sample with a mask: image, prediction, then the scores of `groups` (see module docstring).

    mask_threshold: 0 keeps truth masks as they are (instance labels stay labels); > 0 binarises them at that value
    first (anti-aliased 8-bit masks: 127), instances then being their connected components.

    on_error="raise" stops at the first missing/unreadable/mismatched prediction with an error naming the file;
    "skip" records it in `report.attrs["failures"]` (list of "path: problem") and goes on. verbose=0 hides the
    progress bar.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    rows, failures = [], []
    for s in tqdm(samples, desc="evaluate", unit="img", disable=not verbose):
        if s.mask is None:
            continue
        pp = prediction_path(pred_dir, s)
        try:
            if not pp.is_file():
                raise FileNotFoundError(f"{pp}: no prediction for {s.image}")
            pred = read_mask(pp, instances=True)
            truth = read_mask(s.mask, threshold=mask_threshold) if mask_threshold > 0 else \
                read_mask(s.mask, instances=True)
            if pred.shape != truth.shape:
                raise ImageReadError(f"{pp}: prediction is {pred.shape[0]}×{pred.shape[1]} but mask {s.mask} is "
                                     f"{truth.shape[0]}×{truth.shape[1]}")
            saved = _saved_labels(instances_path(pred_dir, s), pred.shape) if "instance" in groups else None
            rows.append({"image": s.image, "prediction": str(pp),
                         **image_scores(pred, truth, groups, connectivity, pred_labels=saved)})
        except (FileNotFoundError, ImageReadError, ValueError) as exc:
            if on_error == "raise":
                raise
            failures.append(str(exc))
    if not rows:
        detail = f" ({len(failures)} failed; first: {failures[0]})" if failures else ""
        raise ValueError(f"no samples with masks to evaluate{detail}")
    report = pd.DataFrame(rows)
    report.attrs["failures"] = failures
    return report


def summarize(report) -> dict[str, float]:
    """{"n": rows, "mean_<score>": mean over images, skipping NaN (e.g. undefined Hausdorff), ...}, plus, when the
    report has instance counts, the dataset-level instance scores from TP/FP/FN summed over images (every cell
    counts once, whatever image it is in): instance_precision/recall/f1 at IoU 0.5, instance_tp/fp/fn,
    instance_ap50 and instance_map_50_95."""
    cols = [c for c in SCORE_COLUMNS if c in report]
    summary = {"n": int(len(report)), **{f"mean_{c}": float(report[c].mean()) for c in cols}}
    tp_cols = {float(t): tp_column(t) for t in MAP_THRESHOLDS}
    if {"n_true_instances", "n_pred_instances", *tp_cols.values()} <= set(report.columns):
        summed = summed_instance_scores(int(report["n_true_instances"].sum()), int(report["n_pred_instances"].sum()),
                                        {t: int(report[c].sum()) for t, c in tp_cols.items()})
        summed["instance_ap50"], summed["instance_map_50_95"] = summed.pop("ap50"), summed.pop("map_50_95")
        summary.update(summed)
    return summary
