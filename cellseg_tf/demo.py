"""The demo: synthetic data -> train -> tiled prediction -> evaluation -> summary.json, curves and overlays."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .common.files import write_text_atomic
from .training.config import TrainConfig
from .analysis.evaluation import evaluate_folder, summarize
from .predict.batch_predict import predict_batch
from .predict.options import BatchOptions, output_paths
from .data.io import open_manifest, read_image, read_mask, write_png
from .data.manifest import Sample, output_stem, select
from .data.preprocessing import percentile_normalize
from .data.synthetic import make_dataset
from .training.engine import train
from .common.visualize import overlay


def write_overlays(pred_dir: Path, samples: "list[Sample | str]", out_dir: Path) -> list[Path]:
    """One PNG per sample (a manifest `Sample`, or an image path): [image | prediction-vs-truth overlay] (prediction
    alone, green, for an image without a mask), named like the prediction."""
    paths = []
    for s in samples:
        image_path, mask_path = (s.image, s.mask) if isinstance(s, Sample) else (str(s), None)
        image = percentile_normalize(read_image(image_path, 1))[..., 0]
        pred = read_mask(output_paths(pred_dir, image_path)["mask"])
        truth = read_mask(mask_path) if mask_path else None
        grey = (np.repeat(image[..., None], 3, axis=-1) * 255).astype(np.uint8)
        panel = np.concatenate([grey, overlay(image, pred, truth)], axis=1)
        paths.append(write_png(out_dir / f"{output_stem(image_path)}.png", panel))
    return paths


# `cellseg-tf demo --quick`: the smallest run that still goes through every stage (checks an install in ~a minute;
# its Dice means nothing).
QUICK = {"n_images": 6, "image_size": 64, "epochs": 1, "patch_size": 32, "batch_size": 4, "steps_per_epoch": 2}


def run_demo(out: str | os.PathLike = "runs/demo", n_images: int = 16, image_size: int = 256, epochs: int = 20,
             patch_size: int = 128, batch_size: int = 8, steps_per_epoch: int = 0, seed: int = 0,
             verbose: int = 1, manifest: str | os.PathLike | None = None, tensorboard: bool = False) -> dict:
    """Run the whole pipeline and return (and write to OUT/summary.json) the summary.

    With `manifest=None` a synthetic fluorescence-nuclei set of `n_images` is generated into OUT/data; otherwise the
    given manifest's train/val rows train the model and its test rows are predicted and scored. `tensorboard`: also
    write OUT/run/tensorboard/ (needs the tensorboard package). `run_demo(out, **QUICK)` is the install check.
    """
    out = Path(out)
    t_start = time.perf_counter()
    if manifest is None:
        manifest = make_dataset(out / "data", n_images=n_images, shape=(image_size, image_size), seed=seed)
    config = TrainConfig(manifest=str(manifest), out=str(out / "run"), epochs=epochs, patch_size=patch_size,
                         batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed, verbose=verbose,
                         tensorboard=tensorboard)
    result = train(config)
    samples = open_manifest(manifest)
    test = select(samples, "test")
    if not test:
        raise ValueError(f"{manifest}: no split=test rows to predict and score")
    pred_dir = out / "predictions"
    predict_batch([s.image for s in test], [result.best_model], pred_dir, BatchOptions(progress=verbose > 0))
    report = evaluate_folder(pred_dir, test)
    write_text_atomic(out / "report.csv", report.to_csv(index=False))
    write_overlays(pred_dir, test, out / "overlays")
    scores = summarize(report)
    summary = {"dice": scores["mean_dice"], "iou": scores["mean_iou"], "n_test": scores["n"],
               "train_seconds": round(result.train_seconds, 1), "total_seconds": round(time.perf_counter() - t_start, 1),
               "epochs_run": len(result.history.get("loss", [])), "best_val_dice": result.best_val_dice,
               "model": str(result.best_model), "curves": str(result.run_dir / "curves.png"),
               "overlays": str(out / "overlays")}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary
