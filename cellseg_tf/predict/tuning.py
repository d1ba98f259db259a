"""Tune the instance post-processing of a trained run on its validation images (never on test images).

`tune_instances` scores a grid of `InstanceParams` (foreground threshold × seed threshold × seed peak depth ×
border-merge threshold × fragment fraction × minimum size) on all validation images (TP/FP/FN and the matched cells'
IoU summed over the images) and keeps the best by the objective (`OBJECTIVES`; default "pq", panoptic quality =
F1@0.5 × mean IoU of the matched cells: the cell count and how well each cell's outline fits; "f1" = F1@0.5 alone,
ties to the larger summed IoU). F1@0.5 is flat over every knob that only moves outlines while IoU stays above 0.5,
so it picks among near-ties by noise; PQ prefers the outline that fits. Chosen by leave-one-image-out selection on the
validation images of both instance sets (docs/PREDICTION.md "Cells"). It is vectorised over the
grid: each image's maps are predicted once, each (fg, seed, peak depth) floods once per image, each merge threshold
merges that flood once and each fragment fraction refines the merge (`instances.refinements`, the steps prediction
runs; a label image that a step left unchanged is scored once), and every minimum size is scored from one IoU
matrix by dropping the columns of the predicted objects it would remove (dropping an object changes no other
object's IoU).

`tune_run(RUN)` does it for a training run: the validation split of the run's manifest (the same rows training
validated on), each image also shrunk to 0.7× (`VAL_SCALES`: the same kind of image at another magnification has
smaller, denser cells, and the chosen post-processing has to hold there too; measured on the real sets, see
docs/PREDICTION.md "Cells"), the run's best.keras, RUN/instances.yaml (best params, with the score under `tuning:`) and
RUN/instances_grid.csv (every grid point), both written atomically. Prediction reads RUN/instances.yaml beside the
checkpoint (`instance_params.run_instance_params`).
"""
from __future__ import annotations

import dataclasses
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .instance_params import InstanceParams, save_instance_params
from .instances import LABELLERS, core_peaks, core_score, mask_labels, refinements
from .matching import consecutive_labels, iou_matrix, match_ious
from ..common.files import write_text_atomic
from .options import TTA_AUTO, PredictOptions

FG_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SEED_HS = (0.0, 0.05, 0.2)                  # h-maximum depth of a seed's peak; 0 = threshold only
MIN_SIZES = (0, 8, 16, 32, 64)
MERGE_THRESHOLDS = (0.2, 0.3, 1.0)          # 1.0 = never merge
SMALL_FRACTIONS = (0.0, 0.2, 0.3, 0.4)      # 0 = keep fragments as cells
VAL_SCALES = (1.0, 0.7)                     # validation images as they are and shrunk to 0.7×
TTA_CANDIDATES = ("none", "d4")             # tta "auto": both are tuned, the better validation score is kept
GRID_COLUMNS = ["fg_threshold", "seed_threshold", "seed_h", "merge_threshold", "small_fraction", "min_size", "tp",
                "fp", "fn", "precision", "recall", "f1", "sum_matched_iou", "pq"]
#: objective name -> the grid columns it ranks by, best first (descending)
OBJECTIVES = {"pq": ("pq", "f1"), "f1": ("f1", "sum_matched_iou")}
DEFAULT_OBJECTIVE = "pq"


def check_objective(objective: str) -> None:
    """A ValueError naming the known objectives unless `objective` is one of `OBJECTIVES`."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown tuning objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def panoptic_quality(tp: float, fp: float, fn: float, sum_matched_iou: float) -> float:
    """PQ = summed IoU of matched cells / (TP + FP/2 + FN/2) = F1 × mean matched IoU; 1.0 when there is nothing to
    find and nothing was found."""
    den = tp + 0.5 * fp + 0.5 * fn
    return sum_matched_iou / den if den else 1.0


@dataclass
class TuningResult:
    """The best params, its summed F1@0.5 and PQ, the full grid (DataFrame with GRID_COLUMNS, best first), the
    objective that ranked it and the TTA."""

    params: InstanceParams
    f1: float
    grid: object
    n_images: int
    tta: str = "none"           # the test-time augmentation the maps were predicted with
    scales: tuple = (1.0,)      # the validation image scales scored (n_images counts every scaled copy)
    pq: float = float("nan")
    objective: str = DEFAULT_OBJECTIVE

    @property
    def score(self) -> float:
        """The value of the objective for the best params (what the TTA choice compares)."""
        return float(getattr(self, self.objective))


def default_grid(kind: str) -> dict[str, tuple]:
    """The grid searched for a target kind: binary maps have no seeds and no borders between touching cells, so only
    fg threshold × fragment fraction × min size."""
    if kind == "binary":
        seeds, hs, merges = (InstanceParams().seed_threshold,), (0.0,), (InstanceParams().merge_threshold,)
    else:
        seeds, hs, merges = SEED_THRESHOLDS, SEED_HS, MERGE_THRESHOLDS
    return {"fg_threshold": FG_THRESHOLDS, "seed_threshold": seeds, "seed_h": hs, "merge_threshold": merges,
            "small_fraction": SMALL_FRACTIONS, "min_size": MIN_SIZES}


def _counts(iou: np.ndarray, keep: np.ndarray) -> tuple[int, int, int, float]:
    """(tp, fp, fn, summed matched IoU) at IoU 0.5 when only the predicted objects in `keep` are kept."""
    sub = iou[:, keep]
    ti, pi = match_ious(sub, 0.5)
    tp = int(ti.size)
    return tp, int(keep.sum()) - tp, iou.shape[0] - tp, float(sub[ti, pi].sum())


def tune_instances(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray], kind: str,
                   grid: dict[str, Sequence] | None = None, base: InstanceParams | None = None,
                   progress: bool = False, objective: str = DEFAULT_OBJECTIVE) -> TuningResult:
    """Grid search of InstanceParams on cached maps.

    maps: per image (H, W, C) float32 (or uint8) predicted maps; truths: per image (H, W) int truth labels.
    grid: {"fg_threshold": [...], "seed_threshold": [...], "seed_h": [...], "merge_threshold": [...],
    "small_fraction": [...], "min_size": [...]}, missing keys from `default_grid(kind)`;
    base: the other fields (fill_holes, connectivity). Scores, counts summed over images:
    F1 = 2·TP / (2·TP + FP + FN), PQ (`panoptic_quality`); the best by `objective` ("pq" | "f1", `OBJECTIVES`)
    is kept.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if kind not in LABELLERS:
        raise ValueError(f"unknown target kind {kind!r}; known: {', '.join(LABELLERS)}")
    check_objective(objective)
    if len(maps) != len(truths) or not len(maps):
        raise ValueError(f"need one truth per map and at least one image, got {len(maps)} maps, {len(truths)} truths")
    grid = {**default_grid(kind), **(grid or {})}
    base = base or InstanceParams()
    min_sizes = sorted({int(v) for v in grid["min_size"]})
    pairs = list(itertools.product(grid["fg_threshold"], grid["seed_threshold"], grid["seed_h"]))
    merges, fractions = tuple(grid["merge_threshold"]), tuple(grid["small_fraction"])
    refines = list(itertools.product(merges, fractions))            # the order `refinements` yields them in
    totals = np.zeros((len(pairs), len(refines), len(min_sizes), 4))          # tp, fp, fn, summed IoU
    maps = [np.asarray(m) if np.ndim(m) == 3 else np.asarray(m)[..., None] for m in maps]
    peaks = {(i, h): core_peaks(core_score(m, kind), h) for i, m in enumerate(maps)
             for h in sorted(set(grid["seed_h"])) if h > 0 and kind != "binary"}   # reused by every threshold
    truth_flat = [consecutive_labels(t) for t in truths]                      # each truth relabelled once
    bar = tqdm(total=len(pairs) * len(maps), desc="tune instances", unit="flood", disable=not progress)
    for j, (fg, seed, h) in enumerate(pairs):
        params = base.replace(fg_threshold=fg, seed_threshold=seed, seed_h=h, min_size=0)
        for i, (m, t) in enumerate(zip(maps, truths)):
            raw = LABELLERS[kind](m, params, peaks.get((i, h)))
            scored = {}     # id(labels) -> (labels, counts per min size): an unchanged step returns its input
            for r, (_, _, labels) in enumerate(refinements(raw, m, kind, merges, fractions)):
                if id(labels) not in scored:
                    iou = iou_matrix(t, labels, truth_flat[i])
                    sizes = np.bincount(labels.ravel())[1:]
                    sizes = sizes[sizes > 0]                         # iou_matrix's columns: the ids present, in order
                    scored[id(labels)] = labels, [_counts(iou, sizes >= max(1, size)) for size in min_sizes]
                totals[j, r] += scored[id(labels)][1]
            bar.update()
    bar.close()
    rows = []
    for (j, (fg, seed, h)), (r, (merge, fraction)), (k, size) in itertools.product(
            enumerate(pairs), enumerate(refines), enumerate(min_sizes)):
        tp, fp, fn, s_iou = totals[j, r, k]
        den = 2 * tp + fp + fn
        rows.append({"fg_threshold": float(fg), "seed_threshold": float(seed), "seed_h": float(h),
                     "merge_threshold": float(merge),
                     "small_fraction": float(fraction), "min_size": size, "tp": int(tp),
                     "fp": int(fp), "fn": int(fn), "precision": tp / (tp + fp) if tp + fp else 1.0,
                     "recall": tp / (tp + fn) if tp + fn else 1.0, "f1": 2 * tp / den if den else 1.0,
                     "sum_matched_iou": s_iou, "pq": panoptic_quality(tp, fp, fn, s_iou)})
    table = pd.DataFrame(rows, columns=GRID_COLUMNS)
    table = table.sort_values(list(OBJECTIVES[objective]), ascending=False, kind="stable").reset_index(drop=True)
    best = table.iloc[0]
    params = base.replace(fg_threshold=float(best.fg_threshold), seed_threshold=float(best.seed_threshold),
                          seed_h=float(best.seed_h), merge_threshold=float(best.merge_threshold),
                          small_fraction=float(best.small_fraction),
                          min_size=int(best.min_size))
    return TuningResult(params, float(best.f1), table, len(maps), pq=float(best.pq), objective=objective)


def write_tuning(run: str | os.PathLike, result: TuningResult, kind: str) -> tuple[Path, Path]:
    """RUN/instances.yaml (best params + score under `tuning:`) and RUN/instances_grid.csv, both atomic."""
    run = Path(run)
    text = io.StringIO()
    result.grid.to_csv(text, index=False)
    grid_path = write_text_atomic(run / "instances_grid.csv", text.getvalue())
    yaml_path = save_instance_params(run / "instances.yaml", result.params, kind=kind, objective=result.objective,
                                     val_f1=result.f1, val_pq=result.pq, val_images=result.n_images,
                                     val_scales=list(result.scales), tta=result.tta, grid="instances_grid.csv")
    return yaml_path, grid_path


def _run_config(run: str | os.PathLike):
    from ..training.config import TrainConfig

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; tuning needs the folder of a training run")
    return TrainConfig.load(path)


def validation_samples(run: str | os.PathLike, manifest: str | os.PathLike | None = None) -> list:
    """The validation rows of a run: split=val rows of its manifest, else the seeded share of train rows training
    held out (`engine.split_train_val` with the run's val_fraction and seed). Only rows with a mask."""
    from ..data.io import open_manifest
    from ..training.engine import split_train_val

    config = _run_config(run)
    source = manifest or config.manifest
    if not source:
        raise ValueError(f"{run}/config.yaml names no manifest; pass manifest=")
    _, val = split_train_val(open_manifest(source), config.val_fraction, config.seed)
    return [s for s in val if s.mask is not None]


def tune_run(run: str | os.PathLike, model: str | os.PathLike | None = None,
             manifest: str | os.PathLike | None = None, grid: dict[str, Sequence] | None = None,
             options: PredictOptions | None = None, progress: bool = True,
             scales: Sequence[float] = VAL_SCALES, objective: str = DEFAULT_OBJECTIVE) -> TuningResult:
    """Tune the post-processing of RUN's model (default RUN/best.keras) on its validation images and write
    RUN/instances.yaml + RUN/instances_grid.csv. options: how the Predictor tiles and normalises (default
    `PredictOptions()`, normalisation from the run's config). With tta "auto" (the default) the validation images
    are predicted both plainly and with d4 test-time augmentation; d4 is kept (saved as `tta: d4`, which
    prediction's tta "auto" then uses) only when its best objective score is higher: 8× the prediction time has to
    pay. objective: how grid points are ranked (`OBJECTIVES`).
    scales: each validation image is also scored resized by these factors (image area-averaged, truth nearest)."""
    from tqdm.auto import tqdm

    from ..data.io import read_image, read_mask
    from ..data.preprocessing import rescale_pair
    from .inference import Predictor

    run = Path(run)
    model = Path(model) if model is not None else run / "best.keras"
    samples = validation_samples(run, manifest)
    threshold = float(getattr(_run_config(run), "mask_threshold", 0) or 0)   # > 0: binary truth -> components
    check_objective(objective)
    if not samples:
        raise ValueError(f"{run}: no validation images with masks to tune instance post-processing on")
    options = options or PredictOptions()
    candidates = TTA_CANDIDATES if options.tta == TTA_AUTO else (options.tta,)
    truths = [mask_labels(read_mask(s.mask, threshold=threshold) if threshold > 0 else
                          read_mask(s.mask, instances=True))[0] for s in samples]
    scales = [float(v) for v in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive factors, got {scales}")
    best, best_tta = None, None
    for tta in candidates:
        predictor = Predictor.from_files([model], dataclasses.replace(options, tta=tta))
        maps, scored = [], []
        for s, truth in tqdm(list(zip(samples, truths)), desc=f"predict val (tta {tta})", unit="img",
                             disable=not progress):
            for scale in scales:
                if scale == 1.0:
                    maps.append(predictor.predict_file(s.image)[0])
                    scored.append(truth)
                else:
                    image, small = rescale_pair(read_image(s.image, predictor.channels), truth, scale)
                    maps.append(predictor.predict_image(image))
                    scored.append(small)
        result = tune_instances(maps, scored, predictor.kind, grid, progress=progress, objective=objective)
        result.scales = tuple(scales)
        if best is None or result.score > best.score:
            best, best_tta, kind = result, tta, predictor.kind
    best.tta = best_tta
    write_tuning(run, best, kind)
    return best
