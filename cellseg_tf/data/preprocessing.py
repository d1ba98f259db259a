"""Pure numpy transforms applied before tiling: percentile normalisation, padding and rescaling. No I/O here.

Normalisation is one code path for training and prediction: `intensity_range` finds each channel's low/high
percentiles and `normalize_rows` maps them to 0/1; `percentile_normalize` is the two in a row. Images up to
`EXACT_PERCENTILE_PX` pixels get exact `np.percentile` values. Larger ones (and images read in row windows,
`streamed_intensity_range`) go through `PercentileEstimator`: 8/16-bit integer images get an exact per-channel
histogram (still exact, up to float32 rounding), float images use every s-th pixel in each direction (s chosen so
about `SAMPLE_PX` pixels are sampled), whose percentiles differ from the full image's by a negligible amount for
microscopy images.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

#: default normalisation percentiles (training, prediction, few-shot): the darkest 1 % -> 0, the brightest 0.2 % clipped
#: at 1. Chosen by `benchmarks/bench_real.py` on validation over every real set (README, docs/DATA.md): 2/98 clipped
#: the inside of bright, sparse nuclei flat, so their outlines were lost.
NORM_LOW, NORM_HIGH = 1.0, 99.8
EXACT_PERCENTILE_PX = 1 << 22      # <= 4 MP: exact np.percentile
SAMPLE_PX = 1 << 22                # float images above the limit: strided sample of about this many pixels
PASS_BYTES = 64 << 20              # float64-equivalent size of the rows fed to the estimator at a time


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


def _check_percentiles(low: float, high: float) -> None:
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")


def streamed_intensity_range(read_rows: Callable[[int, int], np.ndarray], shape: tuple[int, int, int], dtype,
                             low: float = NORM_LOW, high: float = NORM_HIGH) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) percentiles, each (C,) float32, of an (H, W, C) image given as a row reader.

    read_rows(r0, r1) -> (r1 - r0, W, C) rows in the image's `dtype`; one pass, about PASS_BYTES at a time.
    """
    _check_percentiles(low, high)
    h, w, c = shape
    est = PercentileEstimator(shape, dtype)
    step = max(1, PASS_BYTES // max(1, w * c * 8))
    for r0 in range(0, h, step):
        est.update(read_rows(r0, min(h, r0 + step)), r0)
    return est.result(low, high)


def intensity_range(image: np.ndarray, low: float = NORM_LOW, high: float = NORM_HIGH) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) percentiles of an (H, W, C) image, each (C,) float32; exact up to EXACT_PERCENTILE_PX."""
    _check_percentiles(low, high)
    h, w, _ = image.shape
    if h * w <= EXACT_PERCENTILE_PX:
        x = np.asarray(image, np.float32)
        return (np.percentile(x, low, axis=(0, 1)).astype(np.float32),
                np.percentile(x, high, axis=(0, 1)).astype(np.float32))
    return streamed_intensity_range(lambda a, b: image[a:b], image.shape, image.dtype, low, high)


def normalize_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(n, W, C) any dtype -> float32 in [0, 1]: `(x - lo) / (hi - lo)` per channel, clipped; a constant channel
    (hi - lo <= eps) maps to 0 instead of dividing by zero. lo, hi: (C,) from `intensity_range`."""
    scale = np.where(hi - lo > eps, hi - lo, np.inf).astype(np.float32)
    return np.clip((np.asarray(rows, np.float32) - lo) / scale, 0.0, 1.0).astype(np.float32)


def percentile_normalize(image: np.ndarray, low: float = NORM_LOW, high: float = NORM_HIGH,
                         eps: float = 1e-6) -> np.ndarray:
    """Stretch each channel so its `low`/`high` percentiles map to 0/1, clip to [0, 1].

    image: (H, W) or (H, W, C) of any numeric dtype (16-bit range is used as is) -> same shape, float32 in [0, 1].
    Percentiles are taken per image and per channel (by default `NORM_LOW` / `NORM_HIGH`: 1 / 99.8), so 8-bit
    and 16-bit inputs land on the same scale. Prediction normalises with the same two functions, band by band.
    """
    _check_percentiles(low, high)
    x = np.asarray(image)
    if x.size == 0:
        raise ValueError("cannot normalise an empty image")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("image contains NaN or Inf values; fix or mask them before normalising")
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    out = normalize_rows(x, *intensity_range(x, low, high), eps=eps)
    return out[..., 0] if squeeze else out


def pad_to_multiple(array: np.ndarray, multiple: int, mode: str = "reflect", min_size: int = 0) -> np.ndarray:
    """Pad the bottom/right of (H, W[, C]) so H and W are multiples of `multiple` and at least `min_size`.

    mode: "reflect" (numpy 'symmetric' so 1-pixel images work) or "zero". Crop back with `array[:H, :W]`.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = array.shape[:2]
    th = max(-(-h // multiple) * multiple, -(-min_size // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-min_size // multiple) * multiple)
    if (th, tw) == (h, w):
        return array
    pads = [(0, th - h), (0, tw - w)] + [(0, 0)] * (array.ndim - 2)
    if mode == "zero":
        return np.pad(array, pads, mode="constant")
    if mode == "reflect":
        return np.pad(array, pads, mode="symmetric")
    raise ValueError(f"unknown pad mode {mode!r}; use 'reflect' or 'zero'")


def rescale_pair(image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """An image and its label mask resized by `scale` (cells `scale`× as wide): (H, W[, C]) any dtype ->
    (h, w[, C]) float32 (area averaging when shrinking, bilinear when growing), (H, W) int -> (h, w) int32 (nearest,
    so ids stay ids); h, w = round(H·scale), round(W·scale), at least 1. Used to validate on smaller cells."""
    import cv2

    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    h, w = labels.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(np.asarray(image, np.float32), size, interpolation=interp)
    if np.ndim(image) == 3 and out.ndim == 2:
        out = out[..., None]                       # cv2 drops a single trailing channel
    lab = cv2.resize(np.asarray(labels, np.int32).astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    return out, np.rint(lab).astype(np.int32)
