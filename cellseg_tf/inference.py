"""Tiled ensemble prediction: full-size vote maps from any number of `.keras` models, streamed in bands of tiles.

An image is normalised like in training (per-channel 2/98 percentile stretch), padded (reflect), cut into fixed-size
tiles (a fixed size sidesteps Keras' retracing trap with bilinear UpSampling2D), and all ensemble members predict
each batch of tiles inside one compiled function (`ensemble.build_tile_fn`). Tiles are processed band by band (a few
tile rows at a time) and finished rows are handed to a callback, so memory grows with the image width, never with
models × tiles. TIFFs are read with rasterio windowed reads, so an 8192×8192 16-bit image never sits in memory as
float.

Tilings: "overlap" (default) — tiles overlap by `overlap`·P px, are blended with a raised-cosine window and the
image is reflect-padded by half the overlap on every side, so there are no seams and borders get context;
"grid" — seed 002's patchify-style non-overlapping grid, the image reflect-padded at the bottom/right to a multiple
of P.

Normalisation of huge images: the 2/98 percentiles are computed exactly on images up to `EXACT_PERCENTILE_PX`
pixels (same numbers as training). Larger images are read in row windows: 8/16-bit integer images get an exact
per-channel histogram (so the percentiles are still exact, up to float32 rounding), float images use every s-th
pixel in each direction (s chosen so at most ~4 M pixels are sampled), a sample whose percentiles differ from the
full image's by a negligible amount for microscopy images.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .ensemble import TTA_MODES, VOTES, binarize, build_tile_fn, member_weights, normalize_weights
from .io import (IMAGE_EXT, TIFF_EXT, ImageReadError, tiff_target, list_images, open_manifest, read_image,
                 to_channels)
from .manifest import select, split_frame
from .tiling import axis_origins, blend_window

EXACT_PERCENTILE_PX = 1 << 22      # <= 4 MP: exact np.percentile, identical to training's percentile_normalize
SAMPLE_PX = 1 << 22                # float images above the limit: strided sample of about this many pixels
STREAM_MIN_PX = 1 << 22            # TIFFs larger than this are read in row windows instead of whole
BAND_BYTES = 32 << 20              # float32 budget of one band of padded rows (the band is read, tiled, blended)
AUTO_BATCH_PX = 1 << 19            # batch_size=None: about this many tile pixels (× TTA copies) per call
TILINGS = ("overlap", "grid")


PRECISIONS = ("auto", "float32", "saved")


def accelerator_available() -> bool:
    """Whether the Keras backend sees a GPU (TensorFlow or torch backends; False elsewhere)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _with_float32_policies(config):
    """A model config (nested dicts/lists) with every mixed-precision DTypePolicy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith(
                "mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _with_float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_float32_policies(v) for v in config]
    return config


def is_mixed_precision(model) -> bool:
    """True if any layer of `model` (nested sub-models included) computes in float16/bfloat16."""
    def leaves(layer):
        for child in getattr(layer, "layers", []):
            yield child
            yield from leaves(child)

    return any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16") for layer in leaves(model))


def as_float32(model):
    """A float32-compute copy of a model saved under mixed precision (same weights, which mixed precision keeps in
    float32 anyway). On a CPU, float16 convolutions are emulated and several times slower than float32."""
    import keras

    clone = model.__class__.from_config(_with_float32_policies(model.get_config()))
    clone.set_weights(model.get_weights())
    if is_mixed_precision(clone):  # a layer kept its policy elsewhere than in the config: keep the original
        return model
    return clone if isinstance(clone, keras.Model) else model


def load_models(paths: Sequence[str | os.PathLike], precision: str = "auto") -> list:
    """Load `.keras` models in safe mode (custom objects are registered by importing our modules).

    precision: "auto" runs models trained under mixed_float16 in float32 when there is no GPU (a T4-trained model
    predicted on a laptop), "float32" always does, "saved" keeps each layer's saved dtype policy.
    """
    import keras

    from . import losses, metrics, models as _models  # noqa: F401  (register custom objects and layers)

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    models = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: model file not found")
        try:
            model = keras.models.load_model(p, compile=False)
        except Exception as exc:
            raise ValueError(f"{p}: cannot load Keras model ({exc})") from exc
        if is_mixed_precision(model) and (precision == "float32" or
                                          (precision == "auto" and not accelerator_available())):
            model = as_float32(model)
        models.append(model)
    return models


def run_normalization(model_paths: Sequence[str | os.PathLike]) -> tuple[float, float] | None:
    """(norm_low, norm_high) percentiles the models were trained with, from the `config.yaml` of their run folder
    (RUN/best.keras, RUN/epochs/epoch_003.keras, CVDIR/fold_k/best.keras); None when no model has one.

    Prediction must normalise like training did; models trained with different percentiles cannot share one
    normalisation, so that is an error.
    """
    import yaml

    found: dict[tuple[float, float], list[str]] = {}
    for p in model_paths:
        for folder in (Path(p).parent, Path(p).parent.parent):
            cfg = folder / "config.yaml"
            if cfg.is_file():
                try:
                    data = yaml.safe_load(cfg.read_text()) or {}
                except yaml.YAMLError as exc:
                    raise ValueError(f"{cfg}: cannot read the run config of {p} ({exc})") from None
                if isinstance(data, dict) and "norm_low" in data and "norm_high" in data:
                    key = (float(data["norm_low"]), float(data["norm_high"]))
                    found.setdefault(key, []).append(str(p))
                break
    if len(found) > 1:
        listing = "; ".join(f"{lo:g}/{hi:g}: {', '.join(ps)}" for (lo, hi), ps in found.items())
        raise ValueError(f"the models were trained with different normalisation percentiles ({listing}); "
                         "predict them as separate ensembles, or force one with --norm-low/--norm-high")
    return next(iter(found)) if found else None


# ----------------------------------------------------------------------------------------------- normalisation
def _np_percentile_from_counts(values: np.ndarray, cum: np.ndarray, q: float) -> np.float32:
    """numpy's default ('linear') percentile of a sample given as sorted distinct `values` and cumulative counts."""
    n = int(cum[-1])
    virtual = (n - 1) * (q / 100.0)
    lo_i = math.floor(virtual)
    gamma = virtual - lo_i
    hi_i = min(lo_i + 1, n - 1)
    a = np.float32(values[np.searchsorted(cum, lo_i, side="right")])
    b = np.float32(values[np.searchsorted(cum, hi_i, side="right")])
    diff = np.float32(b - a)
    return np.float32(b - diff * np.float32(1 - gamma)) if gamma >= 0.5 else np.float32(a + diff * np.float32(gamma))


class PercentileEstimator:
    """Streaming per-channel percentiles of an (H, W, C) image fed in row windows (see the module docstring)."""

    def __init__(self, shape: tuple[int, int, int], dtype, sample_px: int = SAMPLE_PX):
        self.channels = shape[2]
        self.dtype = np.dtype(dtype)
        self.hist = self.dtype.kind in "ui" and self.dtype.itemsize <= 2
        self.stride = max(1, math.ceil(math.sqrt(shape[0] * shape[1] / sample_px)))
        self.offset = -int(np.iinfo(self.dtype).min) if self.hist else 0
        self.counts = [np.zeros(1 << (8 * self.dtype.itemsize), np.int64) for _ in range(self.channels)] \
            if self.hist else None
        self.samples: list[np.ndarray] = []

    def update(self, rows: np.ndarray, r0: int) -> None:
        """rows: (n, W, C) native dtype, the image rows starting at row r0."""
        if self.hist:
            for c in range(self.channels):
                self.counts[c] += np.bincount(rows[..., c].ravel().astype(np.int64) + self.offset,
                                              minlength=len(self.counts[c]))
        else:
            first = (-r0) % self.stride
            sample = np.asarray(rows[first::self.stride, ::self.stride], np.float32)
            self.samples.append(sample.reshape(-1, self.channels))

    def result(self, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per channel, each (C,) float32."""
        if not self.hist:
            sample = np.concatenate(self.samples)
            return (np.percentile(sample, low, axis=0).astype(np.float32),
                    np.percentile(sample, high, axis=0).astype(np.float32))
        lo, hi = [], []
        for counts in self.counts:
            nz = np.flatnonzero(counts)
            values, cum = nz - self.offset, np.cumsum(counts[nz])
            lo.append(_np_percentile_from_counts(values, cum, low))
            hi.append(_np_percentile_from_counts(values, cum, high))
        return np.array(lo, np.float32), np.array(hi, np.float32)


def intensity_range(image: np.ndarray, low: float = 2.0, high: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) percentiles of an (H, W, C) image, each (C,) float32; exact up to EXACT_PERCENTILE_PX."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    h, w, c = image.shape
    if h * w <= EXACT_PERCENTILE_PX:
        x = np.asarray(image, np.float32)
        return (np.percentile(x, low, axis=(0, 1)).astype(np.float32),
                np.percentile(x, high, axis=(0, 1)).astype(np.float32))
    est = PercentileEstimator(image.shape, image.dtype)
    step = max(1, (64 << 20) // max(1, w * c * 8))
    for r0 in range(0, h, step):
        est.update(image[r0:r0 + step], r0)
    return est.result(low, high)


def normalize_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(n, W, C) any dtype -> float32 in [0, 1], `(x - lo) / (hi - lo)` clipped; like `percentile_normalize`."""
    scale = np.where(hi - lo > eps, hi - lo, np.inf).astype(np.float32)
    return np.clip((np.asarray(rows, np.float32) - lo) / scale, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ TIFF windows
class TiffRowReader:
    """Windowed reads of a (multi-page) TIFF as (n, W, channels) native-dtype rows; use as a context manager.

    Applies `io.to_channels` and the NaN check per window; GDAL's block cache is capped so it does not grow RSS.
    """

    def __init__(self, path: str, channels: int):
        self.path, self.channels = str(path), channels
        self.read_seconds = 0.0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "TiffRowReader":
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        base, frame = split_frame(self.path)
        if not Path(base).is_file():
            raise ImageReadError(f"{base}: file not found")
        target = tiff_target(base, frame)  # io's rules: a stack needs '#k', k must exist
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        self._stack.enter_context(rasterio.Env(GDAL_CACHEMAX=64))
        try:
            self.src = self._stack.enter_context(rasterio.open(target))
        except Exception as exc:
            self._stack.close()
            raise ImageReadError(f"{self.path}: cannot read TIFF ({exc})") from exc
        self.height, self.width = self.src.height, self.src.width
        self.dtype = np.dtype(self.src.dtypes[0])
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def read(self, r0: int, r1: int) -> np.ndarray:
        from rasterio.windows import Window

        t0 = time.perf_counter()
        try:
            data = self.src.read(window=Window(0, r0, self.width, r1 - r0))
        except Exception as exc:
            raise ImageReadError(f"{self.path}: cannot read rows {r0}-{r1} ({exc})") from exc
        rows = to_channels(np.moveaxis(data, 0, -1), self.channels, self.path)
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise ImageReadError(f"{self.path}: image contains NaN or Inf values")
        self.read_seconds += time.perf_counter() - t0
        return rows

    def intensity_range(self, low: float, high: float, rows_per_read: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (lo, hi) from one streamed pass (exact histogram for ≤16-bit ints, else a strided sample)."""
        est = PercentileEstimator((self.height, self.width, self.channels), self.dtype)
        for r0 in range(0, self.height, rows_per_read):
            est.update(self.read(r0, min(self.height, r0 + rows_per_read)), r0)
        return est.result(low, high)


# ------------------------------------------------------------------------------------------------- predictor
@dataclass
class _Layout:
    """Where the tiles of an (h, w) image go: padded-grid tile origins and padded -> source index maps."""

    h: int
    w: int
    top: int
    left: int
    row_map: np.ndarray   # (H',) source row of each padded row (numpy 'symmetric' reflection)
    col_map: np.ndarray   # (W',)
    ys: list[int]
    xs: list[int]
    cov_y: np.ndarray     # (H',) float32 summed 1-D window weights, so the blend weight is outer(cov_y, cov_x)
    cov_x: np.ndarray     # (W',)


@dataclass
class Predictor:
    """All `models` vote on fixed-size tiles of `patch_size` px; returns (H, W) float32 vote maps.

    overlap: fraction of the tile shared with its neighbour (0 <= overlap < 1; tiling="overlap" only).
    batch_size: tiles per compiled call (None or 0: AUTO_BATCH_PX / (P² · TTA copies)); halved on out-of-memory.
    weights: per-model vote weights (normalised); `Predictor.from_files` derives them from `z_` groups.
    vote: "soft" | "hard"; threshold: soft-vote threshold and default per-model threshold of the hard vote.
    model_thresholds: optional per-model thresholds for the hard vote. tta: "none" | "flip" | "d4".
    """

    models: list
    patch_size: int | None = None
    overlap: float = 0.25
    batch_size: int | None = 8
    norm_low: float = 2.0
    norm_high: float = 98.0
    tiling: str = "overlap"
    vote: str = "soft"
    threshold: float = 0.5
    weights: Sequence[float] | None = None
    model_thresholds: Sequence[float] | None = None
    tta: str = "none"
    names: Sequence[str] | None = None
    _fn: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not self.models:
            raise ValueError("no models given")
        if self.tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {', '.join(TILINGS)}, got {self.tiling!r}")
        if self.vote not in VOTES:
            raise ValueError(f"vote must be one of {', '.join(VOTES)}, got {self.vote!r}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        names = list(self.names) if self.names else [getattr(m, "name", f"model{i}") for i, m in enumerate(self.models)]
        self._check_shapes(names)
        self.weights = normalize_weights(np.ones(len(self.models)) if self.weights is None else self.weights)
        if len(self.weights) != len(self.models):
            raise ValueError(f"got {len(self.weights)} weights for {len(self.models)} models")
        thresholds = self.model_thresholds if self.model_thresholds is not None else [self.threshold] * len(self.models)
        if len(thresholds) != len(self.models):
            raise ValueError(f"got {len(thresholds)} per-model thresholds for {len(self.models)} models")
        self.model_thresholds = [float(t) for t in thresholds]
        self.overlap_px = 0 if self.tiling == "grid" else int(round(self.overlap * self.patch_size))
        ramp = np.sqrt(np.diagonal(blend_window(self.patch_size, self.overlap_px))) if self.overlap_px else \
            np.ones(self.patch_size)
        self.ramp = ramp.astype(np.float32)            # 1-D profile of tiling.blend_window
        self.window = np.outer(self.ramp, self.ramp)   # (P, P); separable: summed weights = outer(cov_y, cov_x)
        n_tta = len(TTA_MODES[self.tta])
        if not self.batch_size:
            self.batch_size = int(min(64, max(1, AUTO_BATCH_PX // (self.patch_size ** 2 * n_tta))))
        self.last_tile_count = 0
        self._fn = self._compile()

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike], group_weights: dict[str, float] | None = None,
                   model_weights: Sequence[float] | None = None, precision: str = "auto",
                   **options) -> "Predictor":
        """Load `.keras` files and weight them by seed 002's groups (`z_*` vs standard) × optional own weights.

        Normalisation percentiles not given in `options` come from the models' run configs (`run_normalization`),
        else 2/98. `precision`: see `load_models`.
        """
        weights = member_weights(paths, group_weights, model_weights)
        given = {k: v for k in ("norm_low", "norm_high") if (v := options.pop(k, None)) is not None}
        trained = run_normalization(paths) if not given else None
        options.update(given or (dict(zip(("norm_low", "norm_high"), trained)) if trained else {}))
        return cls(load_models(paths, precision), weights=weights, names=[str(p) for p in paths], **options)

    def _check_shapes(self, names: list[str]) -> None:
        shapes = [tuple(m.inputs[0].shape[1:]) for m in self.models]
        channels = {s[-1] for s in shapes}
        if len(channels) != 1 or None in channels:
            listing = "; ".join(f"{n}: {s[-1]}" for n, s in zip(names, shapes))
            raise ValueError(f"ensemble models must expect the same number of channels, got {listing}")
        self.channels = channels.pop()
        for n, s in zip(names, shapes):
            if s[0] != s[1]:
                raise ValueError(f"{n}: model input is {s[0]}×{s[1]}; tiles are square, use a square-input model")
        fixed = {n: s[0] for n, s in zip(names, shapes) if s[0] is not None}
        sizes = set(fixed.values())
        if len(sizes) > 1:
            listing = "; ".join(f"{n}: {p} px" for n, p in fixed.items())
            raise ValueError(f"ensemble models were saved for different tile sizes ({listing}); vote only models "
                             "trained with the same patch size, or run them as separate ensembles")
        if self.patch_size is None:
            self.patch_size = sizes.pop() if sizes else 256
        elif sizes and self.patch_size not in sizes:
            raise ValueError(f"patch_size={self.patch_size} but the models take {sizes.pop()} px tiles; "
                             "omit patch_size to use the models' own size")

    def _compile(self):
        import keras

        fn = build_tile_fn(self.models, self.weights, self.vote, self.model_thresholds, self.tta)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            sig = tf.TensorSpec((None, self.patch_size, self.patch_size, self.channels), tf.float32)
            return tf.function(fn, input_signature=[sig], reduce_retracing=True)
        return fn

    # -- tiles
    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, P, P, C) float32 -> (N, P, P, 1) float32 vote map of the ensemble, batch by batch."""
        import keras

        out, i = [], 0
        while i < len(tiles):
            chunk = np.ascontiguousarray(tiles[i:i + self.batch_size], dtype=np.float32)
            try:
                out.append(keras.ops.convert_to_numpy(self._fn(chunk)))
            except Exception as exc:  # out of memory -> smaller batches, same result
                if "ResourceExhausted" not in type(exc).__name__ or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                continue
            i += len(chunk)
        res = np.concatenate(out) if out else np.zeros((0,) + self.window.shape, np.float32)
        return res[..., None]

    def binarize(self, vote_map: np.ndarray) -> np.ndarray:
        """(H, W) vote map -> bool mask (soft: > threshold; hard: > 0.5, a strict weighted majority)."""
        return binarize(vote_map, self.vote, self.threshold)

    # -- layout and streaming
    def _layout(self, h: int, w: int) -> _Layout:
        p = self.patch_size
        if self.tiling == "grid":
            top = left = 0
            bottom, right = max(p, -(-h // p) * p) - h, max(p, -(-w // p) * p) - w
        else:
            top = left = self.overlap_px // 2
            bottom = top + max(0, p - (h + 2 * top))
            right = left + max(0, p - (w + 2 * left))
        row_map = np.pad(np.arange(h), (top, bottom), mode="symmetric")
        col_map = np.pad(np.arange(w), (left, right), mode="symmetric")
        ys = axis_origins(len(row_map), p, self.overlap_px)
        xs = axis_origins(len(col_map), p, self.overlap_px)
        cov_y, cov_x = np.zeros(len(row_map), np.float32), np.zeros(len(col_map), np.float32)
        for y in ys:
            cov_y[y:y + p] += self.ramp
        for x in xs:
            cov_x[x:x + p] += self.ramp
        return _Layout(h, w, top, left, row_map, col_map, ys, xs, cov_y, cov_x)

    def tile_count(self, h: int, w: int) -> int:
        lay = self._layout(h, w)
        return len(lay.ys) * len(lay.xs)

    def stream(self, read_rows: Callable[[int, int], np.ndarray], h: int, w: int,
               emit: Callable[[int, np.ndarray], None]) -> int:
        """Predict an (h, w) image given as a row reader; calls `emit(r0, vote rows (n, w) float32)` top to bottom.

        read_rows(r0, r1) -> (r1 - r0, w, C) float32 normalised rows. Memory: one band (<= BAND_BYTES of padded
        rows, at least one batch of tiles) plus one batch of tiles; never the whole image. Returns the tile count.
        """
        lay = self._layout(h, w)
        p, wp = self.patch_size, len(lay.col_map)
        per_row = len(lay.xs)
        rows_per_band = max(-(-self.batch_size // per_row), BAND_BYTES // (p * wp * self.channels * 4))
        carry = None
        for k0 in range(0, len(lay.ys), rows_per_band):
            band_ys = lay.ys[k0:k0 + rows_per_band]
            r0, r1 = band_ys[0], band_ys[-1] + p
            src_rows = lay.row_map[r0:r1]
            s0, s1 = int(src_rows.min()), int(src_rows.max()) + 1
            src = read_rows(s0, s1)
            if src.shape != (s1 - s0, w, self.channels):
                raise ValueError(f"row reader returned {src.shape}, expected {(s1 - s0, w, self.channels)}")
            band = src[src_rows - s0][:, lay.col_map]                      # (r1 - r0, W', C) padded rows
            del src
            acc = np.zeros((r1 - r0, wp), np.float32)
            if carry is not None:
                acc[:len(carry)] += carry
            origins = [(y - r0, x) for y in band_ys for x in lay.xs]
            for i in range(0, len(origins), self.batch_size):
                chunk = origins[i:i + self.batch_size]
                tiles = np.stack([band[y:y + p, x:x + p] for y, x in chunk])
                for tile, (y, x) in zip(self.predict_tiles(tiles)[..., 0], chunk):
                    acc[y:y + p, x:x + p] += tile * self.window if self.overlap_px else tile
            nxt = lay.ys[k0 + rows_per_band] if k0 + rows_per_band < len(lay.ys) else r1
            carry = acc[nxt - r0:].copy()
            self._emit_rows(lay, r0, acc[:nxt - r0], emit)
        self.last_tile_count = len(lay.ys) * len(lay.xs)
        return self.last_tile_count

    def _emit_rows(self, lay: _Layout, r0: int, acc: np.ndarray, emit) -> None:
        a, b = max(r0, lay.top), min(r0 + len(acc), lay.top + lay.h)
        if a >= b:
            return
        rows = acc[a - r0:b - r0, lay.left:lay.left + lay.w]
        norm = lay.cov_y[a:b, None] * lay.cov_x[None, lay.left:lay.left + lay.w]
        emit(a - lay.top, (rows / norm).astype(np.float32))

    # -- whole images
    def predict_normalized(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 in [0, 1] -> (H, W) float32 vote map (soft: probability; hard: vote fraction)."""
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != self.channels:
            raise ValueError(f"image has shape {image.shape}, models expect (H, W, {self.channels})")
        sink = ArraySink()
        sink.start(*image.shape[:2])
        self.stream(lambda a, b: image[a:b], *image.shape[:2], sink.write)
        return sink.array

    def predict_image(self, image: np.ndarray, sink: "ArraySink | None" = None) -> np.ndarray | None:
        """Raw (H, W[, C]) image of any dtype -> (H, W) float32 vote map, normalised like training, band by band.

        sink: any object with `start(h, w)` and `write(r0, rows (n, w) float32)`; default collects the full map.
        Returns the map for the default sink, else None (rows were handed to `sink`, memory stays bounded).
        """
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] != self.channels:
            raise ValueError(f"image has {image.shape[-1]} channels, models expect {self.channels}")
        lo, hi = intensity_range(image, self.norm_low, self.norm_high)
        own = sink is None
        sink = ArraySink() if own else sink
        sink.start(*image.shape[:2])
        self.stream(lambda a, b: normalize_rows(image[a:b], lo, hi), *image.shape[:2], sink.write)
        return sink.array if own else None

    def predict_file(self, path: str | os.PathLike, sink: "ArraySink | None" = None,
                     stream_min_px: int = STREAM_MIN_PX) -> tuple[np.ndarray | None, float]:
        """Predict an image file -> (vote map, or None when a `sink` is given; seconds spent reading).

        TIFFs over `stream_min_px` pixels are read in row windows (two passes: percentiles, then prediction);
        other files are read whole in their native dtype and normalised band by band.
        """
        base, _ = split_frame(str(path))
        if Path(base).suffix.lower() in TIFF_EXT:
            with TiffRowReader(str(path), self.channels) as reader:
                if reader.height * reader.width > stream_min_px:
                    lo, hi = reader.intensity_range(self.norm_low, self.norm_high)
                    own = sink is None
                    sink = ArraySink() if own else sink
                    sink.start(reader.height, reader.width)
                    self.stream(lambda a, b: normalize_rows(reader.read(a, b), lo, hi), reader.height, reader.width,
                                sink.write)
                    return (sink.array if own else None), reader.read_seconds
        t0 = time.perf_counter()
        image = read_image(path, self.channels)
        read_s = time.perf_counter() - t0
        return self.predict_image(image, sink), read_s


class ArraySink:
    """Collects streamed vote rows into one (H, W) float32 array (`array`)."""

    array: np.ndarray | None = None

    def start(self, h: int, w: int) -> None:
        self.array = np.empty((h, w), np.float32)

    def write(self, r0: int, rows: np.ndarray) -> None:
        self.array[r0:r0 + len(rows)] = rows


# ---------------------------------------------------------------------------------------------- batch inputs
def resolve_inputs(source: str | os.PathLike, split: str | None = "test",
                   exclude: str | os.PathLike | None = None) -> list[str]:
    """A folder (recursive), a glob pattern (`**` allowed), a text file listing paths, or a manifest CSV (+ split)
    -> image paths (folders and globs: sorted, image extensions only).

    exclude: a folder (the job's OUT) whose files are never inputs of a folder or glob, so that predicting into a
    subfolder of the input folder does not feed yesterday's masks back in (unless it is the input folder itself).
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    if skip is not None and Path(source).exists() and skip == Path(source).resolve():
        skip = None

    def keep(p: str) -> bool:
        return skip is None or skip not in Path(p).resolve().parents

    if any(ch in str(source) for ch in "*?[") and not Path(source).exists():
        import glob

        return sorted(p for p in glob.glob(str(source), recursive=True)
                      if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXT and keep(p))
    source = Path(source)
    if source.is_dir():
        return [p for p in list_images(source) if keep(p)]
    if source.suffix.lower() == ".csv":
        return [s.image for s in select(open_manifest(source), split)]
    if source.is_file():
        base = source.parent
        return [str((base / line.strip()) if not Path(line.strip()).is_absolute() else Path(line.strip()))
                for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
    raise FileNotFoundError(f"{source}: no such folder, manifest or list file")


def output_stem(path: str) -> str:
    """Output name of an input: its file stem, plus `_fK` for frame K of a multi-page TIFF (`stack.tif#K`)."""
    base, sep, frame = path.rpartition("#")
    if sep and frame.isdigit():
        return f"{Path(base).stem}_f{frame}"
    return Path(path).stem
