"""Pure numpy transforms applied before tiling: percentile normalisation and padding. No I/O here."""
from __future__ import annotations

import numpy as np


def percentile_normalize(image: np.ndarray, low: float = 2.0, high: float = 98.0, eps: float = 1e-6) -> np.ndarray:
    """Stretch each channel so its `low`/`high` percentiles map to 0/1, clip to [0, 1].

    image: (H, W) or (H, W, C) of any numeric dtype (16-bit range is used as is) -> same shape, float32 in [0, 1].
    A constant channel (high == low) maps to 0 instead of dividing by zero. Percentiles are taken per image and per
    channel (seed 001: clip the darkest/brightest 2 %), so 8-bit and 16-bit inputs land on the same scale.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    x = np.asarray(image, dtype=np.float32)
    if x.size == 0:
        raise ValueError("cannot normalise an empty image")
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or Inf values; fix or mask them before normalising")
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    lo = np.percentile(x, low, axis=(0, 1), keepdims=True).astype(np.float32)
    hi = np.percentile(x, high, axis=(0, 1), keepdims=True).astype(np.float32)
    scale = np.where(hi - lo > eps, hi - lo, np.inf).astype(np.float32)
    out = np.clip((x - lo) / scale, 0.0, 1.0).astype(np.float32)
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
