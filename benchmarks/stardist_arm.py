"""StarDist arm of benchmarks/bench_instances.py: train StarDist2D from scratch for a wall-clock budget, tune its two
thresholds on validation images, predict a test list and write instance label TIFFs plus a JSON of what it did.

Runs inside the separate venv `.venv-stardist` (`make bench-instances-deps`: stardist 0.9.2, tf-keras matching the
TensorFlow there) with TF_USE_LEGACY_KERAS=1, as a subprocess of bench_instances.py. It imports nothing from
cellseg_tf (whose Keras 3 cannot share a process with tf-keras); the caller scores the label files with cellseg_tf's
own evaluation.

Recipe (as the StarDist 2D training example): images normalised per image with csbdeep `normalize(x, 1, 99.8)`,
label holes filled (`fill_label_holes`), random flips / 90° rotations and intensity scaling as augmentation;
Config2D(n_rays=32, grid=(2, 2), 128² patches, batch 8, no TensorBoard); the weights with the best validation loss
are kept (StarDist's own checkpointing), then `optimize_thresholds` on up to --val-images validation images.

Input manifests are CSVs with columns image, mask, split (paths relative to the CSV's folder or absolute):
--train rows with split=train and split=val (no val rows: validate on the training images, as cellseg_tf does for a
single image); --test rows (any split) are predicted. Output (OUT):
  labels/<image stem>.tif   uint16 (uint32 above 65535 cells) instance labels, one per test image
  labels_val/<stem>.tif     the same for the validation images (the caller's validation score)
  stardist.json             patches_seen, steps, train_seconds, tune_seconds, predict_seconds (test images),
                            thresholds, predictions / val_predictions {image path: label path}, versions
  model/                    the StarDist model folder (config.json, weights_best.h5, thresholds.json)

Usage: TF_USE_LEGACY_KERAS=1 .venv-stardist/bin/python benchmarks/stardist_arm.py --train TRAIN.csv --test TEST.csv
       --minutes 5 --out OUT [--seed 0] [--val-images 4]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

N_RAYS = 32
GRID = (2, 2)
PATCH = 128
BATCH = 8
NORM_LOW, NORM_HIGH = 1.0, 99.8
STEPS_PER_EPOCH = 100          # Config2D's default: one validation pass and checkpoint per 100 steps
MAX_EPOCHS = 100_000           # "until the time budget is spent"


def read_manifest(path: Path) -> list[dict]:
    """Rows {image, mask, split} of a manifest CSV with absolute paths; an error names the file and the row."""
    if not path.is_file():
        sys.exit(f"{path}: manifest not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.DictReader(line for line in fh if not line.lstrip().startswith("#"))]
    out = []
    for i, r in enumerate(rows, start=2):
        if not r.get("image"):
            sys.exit(f"{path} row {i}: no image path")
        absolute = {k: str((path.parent / r[k].strip()).resolve()) if r.get(k, "").strip() else ""
                    for k in ("image", "mask")}
        out.append({**absolute, "split": r.get("split", "").strip().lower()})
    return out


def read_array(path: str) -> np.ndarray:
    """One image file -> 2-D array in its own dtype (TIFF via tifffile, else imageio); RGB(A) -> mean of RGB."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        import imageio.v3 as iio

        arr = iio.imread(path)
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        sys.exit(f"{path}: expected a 2-D grey image, got shape {arr.shape}")
    return arr


def read_labels(path: str) -> np.ndarray:
    """A mask file -> (H, W) int32 instance labels with holes filled (a binary mask -> its connected components)."""
    from skimage.measure import label
    from stardist import fill_label_holes

    arr = read_array(path)
    nz = arr[arr != 0]
    labels = arr.astype(np.int32) if nz.size and (nz != nz[0]).any() else label(arr != 0).astype(np.int32)
    return fill_label_holes(labels)


def normalized(path: str) -> np.ndarray:
    from csbdeep.utils import normalize

    return normalize(read_array(path).astype(np.float32), NORM_LOW, NORM_HIGH, axis=(0, 1))


def augmenter(x: np.ndarray, y: np.ndarray):
    """The StarDist example's augmentation: random flips and 90° rotations, intensity × U(0.6, 2) + U(-0.2, 0.2)."""
    k = np.random.randint(4)
    x, y = np.rot90(x, k), np.rot90(y, k)
    for axis in (0, 1):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    x = x * np.random.uniform(0.6, 2.0) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def budget_callback(seconds: float):
    """A tf-keras callback that stops training at the first batch end after `seconds` of training, counting steps."""
    from tensorflow import keras  # tf-keras under TF_USE_LEGACY_KERAS=1

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps, self.start = 0, None

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.perf_counter() - self.start >= seconds:
                self.model.stop_training = True

    return TimeBudget()


def write_labels(path: Path, labels: np.ndarray) -> None:
    """uint16 (uint32 above 65535 cells) label TIFF, written to a temporary name then renamed."""
    import tifffile

    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, type=Path, help="manifest with split=train (and split=val) rows")
    ap.add_argument("--test", required=True, type=Path, help="manifest whose rows are predicted")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-images", type=int, default=4, help="validation images for optimize_thresholds")
    args = ap.parse_args(argv)

    import stardist
    import tensorflow as tf
    from stardist.models import Config2D, StarDist2D

    rows = read_manifest(args.train)
    train = [r for r in rows if r["split"] == "train" and r["mask"]]
    val = [r for r in rows if r["split"] == "val" and r["mask"]] or train
    test = read_manifest(args.test)
    if not train:
        sys.exit(f"{args.train}: no split=train rows with masks")
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    X, Y = [normalized(r["image"]) for r in train], [read_labels(r["mask"]) for r in train]
    Xv, Yv = [normalized(r["image"]) for r in val], [read_labels(r["mask"]) for r in val]
    small = [r["image"] for r, x in zip(train + val, X + Xv) if min(x.shape) < PATCH]
    if small:
        sys.exit(f"{small[0]}: image smaller than the {PATCH}² training patch")

    args.out.mkdir(parents=True, exist_ok=True)
    conf = Config2D(n_rays=N_RAYS, grid=GRID, n_channel_in=1, train_patch_size=(PATCH, PATCH),
                    train_batch_size=BATCH, train_epochs=MAX_EPOCHS, train_steps_per_epoch=STEPS_PER_EPOCH,
                    train_tensorboard=False)
    model = StarDist2D(conf, name="model", basedir=str(args.out))
    model.prepare_for_training()
    budget = budget_callback(args.minutes * 60.0)
    model.callbacks.append(budget)
    t0 = time.perf_counter()
    model.train(X, Y, validation_data=(Xv, Yv), augmenter=augmenter, seed=args.seed)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_tune = max(1, min(args.val_images, len(Xv)))
    model.optimize_thresholds(Xv[:n_tune], Yv[:n_tune])
    tune_s = time.perf_counter() - t0

    def predict(rows: list[dict], folder: Path) -> tuple[dict, float]:
        folder.mkdir(exist_ok=True)
        written, seconds = {}, 0.0
        for r in rows:
            x = normalized(r["image"])
            t0 = time.perf_counter()
            labels, _ = model.predict_instances(x)
            seconds += time.perf_counter() - t0
            path = folder / f"{Path(r['image']).stem}.tif"
            write_labels(path, np.asarray(labels))
            written[r["image"]] = str(path)
        return written, seconds

    predictions, predict_s = predict(test, args.out / "labels")
    val_predictions, _ = predict(val, args.out / "labels_val")

    info = {"patches_seen": budget.steps * BATCH, "steps": budget.steps, "batch_size": BATCH, "patch_size": PATCH,
            "n_rays": N_RAYS, "grid": list(GRID), "minutes": args.minutes, "train_seconds": train_s,
            "tune_seconds": tune_s, "tune_images": n_tune, "predict_seconds": predict_s,
            "thresholds": {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)},
            "train_images": len(X), "val_images": len(Xv), "val_is_train": val is train,
            "predictions": predictions, "val_predictions": val_predictions,
            "versions": {"stardist": stardist.__version__, "tensorflow": tf.__version__}}
    tmp = args.out / ".stardist.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, args.out / "stardist.json")
    print(f"stardist: {budget.steps} steps × {BATCH} patches in {train_s:.0f} s, thresholds prob="
          f"{info['thresholds']['prob']:.3f} nms={info['thresholds']['nms']:.2f}, {len(test)} test images "
          f"predicted in {predict_s:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
