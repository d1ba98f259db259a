"""Tiled (ensemble) prediction: full-size probability maps from any number of `.keras` models.

Images are normalised like in training, reflect-padded to at least one tile, cut into overlapping fixed-size tiles
(fixed size sidesteps Keras' retracing trap with bilinear UpSampling2D), predicted in batches by all models at once,
averaged, and blended back with a smooth window so there are no seams.
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import ImageReadError, list_images, open_manifest, read_image, write_png
from .manifest import select
from .preprocessing import pad_to_multiple, percentile_normalize
from .tiling import TileAccumulator, blend_window, tile_origins


def load_models(paths: list[str | os.PathLike]) -> list:
    """Load `.keras` models in safe mode (custom objects are registered by importing our modules)."""
    import keras

    from . import losses, metrics  # noqa: F401  (register custom objects)

    models = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: model file not found")
        try:
            models.append(keras.models.load_model(p, compile=False))
        except Exception as exc:
            raise ValueError(f"{p}: cannot load Keras model ({exc})") from exc
    return models


@dataclass
class Predictor:
    """Averages the sigmoid outputs of `models` over overlapping tiles of `patch_size` px.

    overlap: fraction of the tile shared with its neighbour (0 <= overlap < 1).
    """

    models: list
    patch_size: int | None = None
    overlap: float = 0.25
    batch_size: int = 8
    norm_low: float = 2.0
    norm_high: float = 98.0
    _fn: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not self.models:
            raise ValueError("no models given")
        shapes = {tuple(m.inputs[0].shape[1:]) for m in self.models}
        channels = {s[-1] for s in shapes}
        if len(channels) != 1:
            raise ValueError(f"models expect different channel counts {sorted(channels)}; ensemble needs one")
        self.channels = channels.pop()
        sizes = {s[0] for s in shapes if s[0] is not None}
        if self.patch_size is None:
            if len(sizes) > 1:
                raise ValueError(f"models were built for different tile sizes {sorted(sizes)}; pass patch_size")
            self.patch_size = sizes.pop() if sizes else 256
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        self.overlap_px = int(round(self.overlap * self.patch_size))
        self.window = blend_window(self.patch_size, self.overlap_px)
        self._fn = self._compile()

    def _compile(self):
        import keras

        models = self.models

        def ensemble(x):
            outs = [m(x, training=False) for m in models]
            return keras.ops.mean(keras.ops.stack([keras.ops.cast(o, "float32") for o in outs]), axis=0)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            sig = tf.TensorSpec((None, self.patch_size, self.patch_size, self.channels), tf.float32)
            return tf.function(ensemble, input_signature=[sig], reduce_retracing=True)
        return ensemble

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, P, P, C) float32 -> (N, P, P, 1) float32 mean probability of the ensemble."""
        out = [np.asarray(self._fn(tiles[i:i + self.batch_size])) for i in range(0, len(tiles), self.batch_size)]
        return np.concatenate(out)

    def predict_normalized(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 [0, 1] -> (H, W) float32 probabilities."""
        h, w = image.shape[:2]
        if image.shape[-1] != self.channels:
            raise ValueError(f"image has {image.shape[-1]} channels, models expect {self.channels}")
        padded = pad_to_multiple(image, 1, "reflect", min_size=self.patch_size)
        origins = tile_origins(padded.shape[:2], self.patch_size, self.overlap_px)
        acc = TileAccumulator(padded.shape[:2] + (1,), self.window)
        for i in range(0, len(origins), self.batch_size):
            chunk = origins[i:i + self.batch_size]
            tiles = np.stack([padded[y:y + self.patch_size, x:x + self.patch_size] for y, x in chunk])
            acc.add(self.predict_tiles(tiles.astype(np.float32)), chunk)
        self.last_tile_count = len(origins)
        return acc.result()[:h, :w, 0]

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Raw (H, W, C) image of any dtype -> (H, W) float32 probabilities (normalised like training)."""
        return self.predict_normalized(percentile_normalize(image, self.norm_low, self.norm_high))


def resolve_inputs(source: str | os.PathLike, split: str | None = "test") -> list[str]:
    """A folder (recursive), a text file listing paths, or a manifest CSV (+ split) -> image paths."""
    source = Path(source)
    if source.is_dir():
        return list_images(source)
    if source.suffix.lower() == ".csv":
        return [s.image for s in select(open_manifest(source), split)]
    if source.is_file():
        base = source.parent
        return [str((base / line.strip()) if not Path(line.strip()).is_absolute() else Path(line.strip()))
                for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
    raise FileNotFoundError(f"{source}: no such folder, manifest or list file")


def output_stem(path: str) -> str:
    base, sep, frame = path.rpartition("#")
    if sep and frame.isdigit():
        return f"{Path(base).stem}_f{frame}"
    return Path(path).stem


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def predict_batch(model_paths: list[str], inputs: list[str], out_dir: str | os.PathLike, patch_size: int | None = None,
                  overlap: float = 0.25, threshold: float = 0.5, batch_size: int = 8, progress: bool = True) -> dict:
    """Predict every input image; write OUT/<stem>.png (uint8 0/255), OUT/timings.csv and OUT/failures.csv.

    A failing image is recorded in failures.csv and the batch goes on. Returns {"done": n, "failed": n}.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(load_models(model_paths), patch_size=patch_size, overlap=overlap, batch_size=batch_size)
    timings, failures = [], []
    for path in tqdm(inputs, desc="predict", unit="img", disable=not progress):
        try:
            t0 = time.perf_counter()
            image = read_image(path, predictor.channels)
            t1 = time.perf_counter()
            prob = predictor.predict_image(image)
            t2 = time.perf_counter()
            write_png(out / f"{output_stem(path)}.png", np.where(prob > threshold, 255, 0).astype(np.uint8))
            t3 = time.perf_counter()
            timings.append([path, f"{t1 - t0:.4f}", f"{t2 - t1:.4f}", f"{t3 - t2:.4f}", predictor.last_tile_count,
                            len(predictor.models)])
        except (ImageReadError, ValueError, OSError) as exc:
            failures.append([path, str(exc)])
    _write_csv(out / "timings.csv", ["image", "read_s", "predict_s", "write_s", "tiles", "models"], timings)
    _write_csv(out / "failures.csv", ["file", "reason"], failures)
    return {"done": len(timings), "failed": len(failures)}
