"""The demo: synthetic data -> train -> tiled prediction -> evaluation -> summary.json, curves and overlays."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .evaluation import evaluate_folder, prediction_path, summarize
from .batch_predict import predict_batch
from .io import open_manifest, read_image, read_mask, write_png
from .manifest import select
from .preprocessing import percentile_normalize
from .synthetic import make_dataset
from .training import train
from .visualize import overlay


def write_overlays(pred_dir: Path, samples, out_dir: Path) -> list[Path]:
    """One PNG per sample: [image | prediction-vs-truth overlay] (prediction alone, green, for a mask-less sample)."""
    paths = []
    for s in samples:
        image = percentile_normalize(read_image(s.image, 1))[..., 0]
        pred = read_mask(prediction_path(pred_dir, s))
        truth = read_mask(s.mask) if s.mask else None
        grey = (np.repeat(image[..., None], 3, axis=-1) * 255).astype(np.uint8)
        paths.append(write_png(out_dir / f"{s.stem}.png", np.concatenate([grey, overlay(image, pred, truth)], axis=1)))
    return paths


def run_demo(out: str | os.PathLike = "runs/demo", n_images: int = 16, image_size: int = 256, epochs: int = 20,
             patch_size: int = 128, batch_size: int = 8, steps_per_epoch: int = 0, seed: int = 0,
             verbose: int = 1, manifest: str | os.PathLike | None = None) -> dict:
    """Run the whole pipeline and return (and write to OUT/summary.json) the summary.

    With `manifest=None` a synthetic fluorescence-nuclei set of `n_images` is generated into OUT/data; otherwise the
    given manifest's train/val rows train the model and its test rows are predicted and scored.
    """
    out = Path(out)
    t_start = time.perf_counter()
    if manifest is None:
        manifest = make_dataset(out / "data", n_images=n_images, shape=(image_size, image_size), seed=seed)
    config = TrainConfig(manifest=str(manifest), out=str(out / "run"), epochs=epochs, patch_size=patch_size,
                         batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed, verbose=verbose)
    result = train(config)
    samples = open_manifest(manifest)
    test = select(samples, "test")
    if not test:
        raise ValueError(f"{manifest}: no split=test rows to predict and score")
    pred_dir = out / "predictions"
    predict_batch([str(result.best_model)], [s.image for s in test], pred_dir, progress=verbose > 0)
    report = evaluate_folder(pred_dir, test)
    report.to_csv(out / "report.csv", index=False)
    write_overlays(pred_dir, test, out / "overlays")
    scores = summarize(report)
    summary = {"dice": scores["mean_dice"], "iou": scores["mean_iou"], "n_test": scores["n"],
               "train_seconds": round(result.train_seconds, 1), "total_seconds": round(time.perf_counter() - t_start, 1),
               "epochs_run": len(result.history.get("loss", [])), "best_val_dice": result.best_val_dice,
               "model": str(result.best_model), "curves": str(result.run_dir / "curves.png"),
               "overlays": str(out / "overlays")}
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    return summary
