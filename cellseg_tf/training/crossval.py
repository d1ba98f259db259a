"""k-fold cross-validation (Chen et al. 2025 §2: 5-fold CV): split the labelled images into k folds, train one run
per fold, summarise the per-fold validation metrics as mean ± std, and list the fold models for ensemble prediction.

Folds come from the manifest's `fold` column when every train/val row has one, otherwise from a seeded shuffle of
the images (frames of one stack, `stack.tif#k`, always share a fold so no image leaks into its own validation).
Test rows are never used. CVDIR layout: fold_<id>/ (a normal training run each), folds.csv (image -> fold),
summary.csv (one row per fold + mean + std), models.txt (the fold best.keras paths, one per line).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from ..common.files import write_text_atomic
from ..data.manifest import Sample, split_frame
from .engine import TrainResult, train

METRICS = ("val_dice", "val_iou", "val_precision", "val_recall", "val_loss")


@dataclass
class Fold:
    """One fold: its id (manifest fold value or 0..k-1) and the rows to train / validate on."""

    id: int
    train: list[Sample]
    val: list[Sample]

    @property
    def name(self) -> str:
        return f"fold_{self.id}"


@dataclass
class CVResult:
    out: Path
    summary_csv: Path
    models: list[Path]
    table: "object"   # pandas DataFrame: one row per fold, then mean and std rows
    results: list[TrainResult]


def _group(sample: Sample) -> str:
    return split_frame(sample.image)[0]


def make_folds(samples: list[Sample], k: int = 5, seed: int = 0, use_manifest_folds: bool = True) -> list[Fold]:
    """Split the train+val rows into folds; each row is validated in exactly one fold (test rows are ignored)."""
    pool = [s for s in samples if s.split in ("train", "val")]
    if not pool:
        raise ValueError("cross-validation needs split=train/val rows; the manifest has none")
    if use_manifest_folds and all(s.fold is not None for s in pool):
        assign = {id(s): int(s.fold) for s in pool}
        ids = sorted(set(assign.values()))
        if len(ids) < 2:
            raise ValueError(f"the manifest's fold column has a single value ({ids[0]}); need at least 2 folds")
    else:
        if k < 2:
            raise ValueError(f"folds must be >= 2, got {k}")
        groups = sorted({_group(s) for s in pool})
        if len(groups) < k:
            raise ValueError(f"{k} folds need at least {k} labelled images; the manifest has {len(groups)}")
        order = np.random.default_rng(seed).permutation(len(groups))
        fold_of = {groups[g]: rank % k for rank, g in enumerate(order)}
        assign = {id(s): fold_of[_group(s)] for s in pool}
        ids = list(range(k))
    folds = []
    for f in ids:
        val = [dataclasses.replace(s, split="val") for s in pool if assign[id(s)] == f]
        tr = [dataclasses.replace(s, split="train") for s in pool if assign[id(s)] != f]
        folds.append(Fold(f, tr, val))
    return folds


def fold_metrics(result: TrainResult) -> dict:
    """Validation metrics at the run's best epoch (highest val_dice) + bookkeeping."""
    h = result.history
    dice = np.asarray(h.get("val_dice", []), np.float64)
    best = int(np.nanargmax(dice)) if dice.size and not np.all(np.isnan(dice)) else -1
    row = {m: (float(h[m][best]) if best >= 0 and m in h else float("nan")) for m in METRICS}
    row.update(best_epoch=best + 1, epochs_run=len(dice), train_seconds=round(result.train_seconds, 1))
    return row


def summarize_folds(rows: list[dict]):
    """Per-fold rows -> DataFrame with `mean` and `std` (sample std, ddof=1) rows appended."""
    import pandas as pd

    df = pd.DataFrame(rows)
    numeric = [c for c in df.columns if c not in ("fold", "model") and pd.api.types.is_numeric_dtype(df[c])]
    mean = {"fold": "mean", **{c: df[c].mean() for c in numeric}}
    std = {"fold": "std", **{c: (df[c].std(ddof=1) if len(df) > 1 else 0.0) for c in numeric}}
    return pd.concat([df, pd.DataFrame([mean, std])], ignore_index=True)


def run_cv(config: TrainConfig, folds: int = 5, out: str | os.PathLike = "runs/cv",
           samples: list[Sample] | None = None, resume: bool = False, use_manifest_folds: bool = True,
           verbose: int = 1) -> CVResult:
    """Train one run per fold under OUT/fold_<id>/ (config.out is replaced) and write the CV summary.

    resume=True skips finished folds and continues an interrupted one, so a killed CV job can be restarted.
    verbose=0 hides the progress bar over folds; the Keras output of each fold follows `config.verbose`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .callbacks import read_state
    from ..data.io import open_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = open_manifest(config.manifest)
    plan = make_folds(samples, folds, config.seed, use_manifest_folds)
    write_text_atomic(out / "folds.csv",
                      pd.DataFrame([{"image": s.image, "fold": f.id} for f in plan for s in f.val]).to_csv(index=False))
    rows, results = [], []
    bar = tqdm(plan, desc="cv", unit="fold", disable=not verbose)
    for fold in bar:
        cfg = TrainConfig.from_dict({**config.to_dict(), "out": str(out / fold.name)})
        can_resume = resume and read_state(cfg.out) is not None and (Path(cfg.out) / "last.keras").is_file()
        result = train(cfg, fold.train + fold.val, resume=can_resume)
        results.append(result)
        rows.append({"fold": fold.name, "n_train": len(fold.train), "n_val": len(fold.val), **fold_metrics(result),
                     "model": str(Path(result.best_model).resolve())})
        bar.set_postfix(val_dice=f"{rows[-1]['val_dice']:.4f}", refresh=False)
    table = summarize_folds(rows)
    write_text_atomic(out / "summary.csv", table.to_csv(index=False))
    models = [Path(r["model"]) for r in rows]
    write_text_atomic(out / "models.txt", "".join(f"{m}\n" for m in models))
    return CVResult(out, out / "summary.csv", models, table, results)


def format_summary(table) -> list[str]:
    """`val_dice = 0.812 ± 0.031` lines from a summary table (mean/std rows)."""
    mean = table[table["fold"] == "mean"].iloc[0]
    std = table[table["fold"] == "std"].iloc[0]
    lines = []
    for m in METRICS:
        if m in table.columns and not (isinstance(mean[m], float) and math.isnan(mean[m])):
            lines.append(f"{m} = {mean[m]:.4f} ± {std[m]:.4f}")
    return lines
