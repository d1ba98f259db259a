"""The tiled ensemble Predictor: full-size vote maps from any number of models, streamed in bands of tiles.

An image is normalised like in training (`data.preprocessing`: per-channel percentile stretch), padded (reflect),
cut into fixed-size tiles (a fixed size sidesteps Keras' retracing trap with bilinear UpSampling2D), and all ensemble
members predict each batch of tiles inside one compiled function (`ensemble.build_tile_fn`). Tiles are processed
band by band (a few tile rows at a time) and finished rows are handed to a sink, so memory grows with the image
width, never with models × tiles. Large TIFFs are read in row windows (`data.tiff.TiffRowReader`, two passes:
percentiles, then prediction), so an 8192×8192 16-bit image never sits in memory as float.

Tilings (`options.TILINGS`): "overlap" (default) — tiles overlap by `overlap`·P px, are blended with a raised-cosine
window (`data.tiling.blend_window`) and the image is reflect-padded by half the overlap on every side, so there are
no seams and borders get context; "grid" — the non-overlapping grid of Das et al.: the image is reflect-padded at
the bottom/right to a multiple of P, cut by `patchify.patchify` and put back by `patchify.unpatchify`.

Maps: a model trained on an instance target (`data.targets`) outputs K = 2 channels (ch0 foreground, ch1 boundary
or distance; `models.target_kind` reads which from the `.keras` file). Every member of an ensemble must predict the
same kind; their maps are averaged channel by channel (`ensemble.build_tile_fn`), blended across tiles as (rows, W,
K) arrays and handed out as (rows, W, K) — or (rows, W) when K = 1 (the vote map of binary models). Tiles are blended
BEFORE any labelling, so the instance post-processing (`instances.labels_from_maps`) sees seamless maps and no tile
seam can cut a cell.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .ensemble import binarize, build_tile_fn, member_inputs, member_target, member_weights, normalize_weights
from .instance_params import run_tta
from .options import TTA_AUTO, TTA_MODES, PredictOptions, run_normalization
from ..data.io import read_image, to_channels
from ..data.manifest import split_frame
from ..data.preprocessing import intensity_range, normalize_rows, streamed_intensity_range
from ..data.tiff import TIFF_EXT, TiffRowReader
from ..data.tiling import TileLayout, blend_ramp, tile_layout
from ..models.loading import load_segmentation_models

STREAM_MIN_PX = 1 << 22            # TIFFs larger than this are read in row windows instead of whole
BAND_BYTES = 32 << 20              # float32 budget of one band of padded rows (the band is read, tiled, blended)
AUTO_BATCH_PX = 1 << 19            # batch_size=None: about this many tile pixels (× TTA copies) per call
DEFAULT_PATCH = 256                # tile size for models saved without a fixed input size

RowReader = Callable[[int, int], np.ndarray]


class ArraySink:
    """Collects streamed rows into one float32 array (`array`): (H, W) vote map, or (H, W, K) maps when the rows
    are (n, W, K) (allocated at the first write, when K is known)."""

    array: np.ndarray | None = None

    def start(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.array = None

    def write(self, r0: int, rows: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty(self.shape + rows.shape[2:], np.float32)
        self.array[r0:r0 + len(rows)] = rows


class Predictor:
    """All `models` vote on fixed-size tiles; returns (H, W) float32 vote maps (soft vote: probability; hard vote:
    weighted fraction of the models saying "cell"), or (H, W, K) maps for models of an instance target (`kind`,
    `out_channels`; channel 0 is the vote map, see the module docstring).

    options: a `PredictOptions` (a `BatchOptions` will do). `self.options` is a validated copy with patch_size (the
    models' saved size), batch_size and norm_low/norm_high resolved, valid to build another Predictor from.
    weights: per-model vote weights, normalised (default: `options.model_weights`, else equal); `from_files` derives
    them from the `z_` groups. names: the models' names in error messages (default: their Keras names).
    """

    def __init__(self, models: Sequence, options: PredictOptions | None = None,
                 weights: Sequence[float] | None = None, names: Sequence[str] | None = None):
        self.models = list(models)
        if not self.models:
            raise ValueError("no models given")
        opts = dataclasses.replace(options or PredictOptions()).validate()
        if opts.tta == TTA_AUTO:           # no files to ask: `from_files` resolves "auto" from the models' runs
            opts = dataclasses.replace(opts, tta="none")
        names = list(names) if names else [getattr(m, "name", f"model{i}") for i, m in enumerate(self.models)]
        self.channels, patch = member_inputs(self.models, names, opts.patch_size, DEFAULT_PATCH)
        self.kind, self.out_channels = member_target(self.models, names)
        weights = opts.model_weights if weights is None else weights
        self.weights = normalize_weights(np.ones(len(self.models)) if weights is None else weights)
        if len(self.weights) != len(self.models):
            raise ValueError(f"got {len(self.weights)} weights for {len(self.models)} models")
        thresholds = opts.model_thresholds if opts.model_thresholds is not None else [opts.threshold] * len(names)
        if len(thresholds) != len(self.models):
            raise ValueError(f"got {len(thresholds)} per-model thresholds for {len(self.models)} models")
        n_tta = len(TTA_MODES[opts.tta])
        batch = opts.batch_size or int(min(64, max(1, AUTO_BATCH_PX // (patch ** 2 * n_tta))))
        low, high = opts.normalization()
        self.options = dataclasses.replace(opts, patch_size=patch, batch_size=batch, norm_low=low, norm_high=high)
        self.thresholds = [float(t) for t in thresholds]   # per model (the hard vote binarises each at its own)
        self.patch_size = patch
        self.batch_size = batch            # halved on out-of-memory
        self.overlap_px = 0 if opts.tiling == "grid" else int(round(opts.overlap * patch))
        ramp = blend_ramp(patch, self.overlap_px)
        self.window = np.outer(ramp, ramp)   # (P, P) = tiling.blend_window; the layout sums the 1-D ramps
        self.last_tile_count = 0
        self._fn = self._compile()

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike], options: PredictOptions | None = None) -> "Predictor":
        """Load `.keras` files (`models.loading.load_segmentation_models` at `options.precision`: models from
        elsewhere are checked and adapted, see docs/PREDICTION.md), each weighted by its group
        (`z_` files vs standard, `options.group_weights`) × `options.model_weights`.

        Normalisation percentiles not set in `options` come from the models: what each `.keras` file carries, else
        its run's config.yaml (`run_normalization`), else the package defaults (`DEFAULT_NORM`).
        """
        opts = dataclasses.replace(options or PredictOptions()).validate()
        if opts.tta == TTA_AUTO:
            opts = dataclasses.replace(opts, tta=run_tta(paths))
        weights = member_weights(paths, opts.group_weights, opts.model_weights)
        if opts.norm_low is None and opts.norm_high is None:
            trained = run_normalization(paths)
            if trained:
                opts = dataclasses.replace(opts, norm_low=trained[0], norm_high=trained[1])
        return cls(load_segmentation_models(paths, opts.precision), opts, weights=weights,
                   names=[str(p) for p in paths])

    def _compile(self):
        import keras

        o = self.options
        fn = build_tile_fn(self.models, self.weights, o.vote, self.thresholds, o.tta)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            sig = tf.TensorSpec((None, self.patch_size, self.patch_size, self.channels), tf.float32)
            return tf.function(fn, input_signature=[sig], reduce_retracing=True)
        return fn

    # -- tiles
    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, P, P, C) float32 -> (N, P, P, K) float32 tile maps of the ensemble (K = 1: the vote), batch by batch."""
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
        return res if res.ndim == 4 else res[..., None]

    def binarize(self, vote_map: np.ndarray) -> np.ndarray:
        """(H, W) vote map, or (H, W, K) maps (their channel 0) -> (H, W) bool mask (soft: > threshold; hard: > 0.5,
        a strict weighted majority)."""
        vote_map = np.asarray(vote_map)
        return binarize(vote_map[..., 0] if vote_map.ndim == 3 else vote_map, self.options.vote,
                        self.options.threshold)

    # -- streaming
    def _layout(self, h: int, w: int) -> TileLayout:
        return tile_layout(h, w, self.patch_size, self.overlap_px, grid=self.options.tiling == "grid")

    def tile_count(self, h: int, w: int) -> int:
        lay = self._layout(h, w)
        return len(lay.ys) * len(lay.xs)

    def stream(self, read_rows: RowReader, h: int, w: int, emit: Callable[[int, np.ndarray], None]) -> int:
        """Predict an (h, w) image given as a row reader; calls `emit(r0, vote rows (n, w) float32)` top to bottom.

        read_rows(r0, r1) -> (r1 - r0, w, C) float32 normalised rows. Memory: one band (<= BAND_BYTES of padded
        rows, at least one batch of tiles) plus its tile predictions; never the whole image. Returns the tile count.
        """
        lay = self._layout(h, w)
        p, wp = self.patch_size, len(lay.col_map)
        rows_per_band = max(-(-self.batch_size // len(lay.xs)), BAND_BYTES // (p * wp * self.channels * 4))
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
            acc = self._predict_band(band, [y - r0 for y in band_ys], lay.xs)  # (r1 - r0, W', K)
            if carry is not None:
                acc[:len(carry)] += carry
            nxt = lay.ys[k0 + rows_per_band] if k0 + rows_per_band < len(lay.ys) else r1
            carry = acc[nxt - r0:].copy()
            self._emit_rows(lay, r0, acc[:nxt - r0], emit)
        self.last_tile_count = len(lay.ys) * len(lay.xs)
        return self.last_tile_count

    def _predict_band(self, band: np.ndarray, ys: list[int], xs: list[int]) -> np.ndarray:
        """(R, W', C) padded band -> (R, W', K) float32 sum of window-weighted tile maps (tile origins ys × xs)."""
        if self.options.tiling == "grid":
            return self._predict_grid(band)
        p, acc = self.patch_size, None
        origins = [(y, x) for y in ys for x in xs]
        for i in range(0, len(origins), self.batch_size):
            chunk = origins[i:i + self.batch_size]
            maps = self.predict_tiles(np.stack([band[y:y + p, x:x + p] for y, x in chunk]))
            if acc is None:
                acc = np.zeros(band.shape[:2] + maps.shape[-1:], np.float32)
            for tile, (y, x) in zip(maps, chunk):
                acc[y:y + p, x:x + p] += tile * self.window[..., None]
        return acc

    def _predict_grid(self, band: np.ndarray) -> np.ndarray:
        """(rows·P, cols·P, C) band -> (rows·P, cols·P, K): patchify's non-overlapping P×P grid, predicted tile by
        tile in raster order and put back with unpatchify."""
        from patchify import patchify, unpatchify

        p, c = self.patch_size, band.shape[-1]
        grid = patchify(band, (p, p, c), step=p)                               # (rows, cols, 1, P, P, C) view
        rows, cols = grid.shape[:2]
        maps = self.predict_tiles(grid.reshape(rows * cols, p, p, c))          # (rows·cols, P, P, K)
        k = maps.shape[-1]
        return unpatchify(maps.reshape(rows, cols, 1, p, p, k), (rows * p, cols * p, k)).astype(np.float32)

    def _emit_rows(self, lay: TileLayout, r0: int, acc: np.ndarray, emit) -> None:
        a, b = max(r0, lay.top), min(r0 + len(acc), lay.top + lay.h)
        if a >= b:
            return
        rows = acc[a - r0:b - r0, lay.left:lay.left + lay.w]
        norm = lay.cov_y[a:b, None] * lay.cov_x[None, lay.left:lay.left + lay.w]
        out = (rows / norm[..., None]).astype(np.float32)
        emit(a - lay.top, out[..., 0] if out.shape[-1] == 1 else out)

    # -- whole images
    def _run(self, read_rows: RowReader, h: int, w: int, sink: "ArraySink | None") -> np.ndarray | None:
        own = sink is None
        sink = ArraySink() if own else sink
        sink.start(h, w)
        self.stream(read_rows, h, w, sink.write)
        return sink.array if own else None

    def predict_normalized(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 in [0, 1] -> (H, W) float32 vote map (soft: probability; hard: vote fraction), or
        (H, W, K) maps for an instance target."""
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != self.channels:
            raise ValueError(f"image has shape {image.shape}, models expect (H, W, {self.channels})")
        return self._run(lambda a, b: image[a:b], *image.shape[:2], None)

    def predict_image(self, image: np.ndarray, sink: "ArraySink | None" = None) -> np.ndarray | None:
        """Raw (H, W[, C]) image of any dtype -> (H, W) float32 vote map ((H, W, K) maps for an instance target),
        normalised like training, band by band.

        sink: any object with `start(h, w)` and `write(r0, rows (n, w) float32)`; default collects the full map.
        Returns the map for the default sink, else None (rows were handed to `sink`, memory stays bounded).
        """
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] != self.channels:
            raise ValueError(f"image has {image.shape[-1]} channels, models expect {self.channels}")
        lo, hi = intensity_range(image, self.options.norm_low, self.options.norm_high)
        return self._run(lambda a, b: normalize_rows(image[a:b], lo, hi), *image.shape[:2], sink)

    def predict_file(self, path: str | os.PathLike, sink: "ArraySink | None" = None,
                     stream_min_px: int = STREAM_MIN_PX) -> tuple[np.ndarray | None, float]:
        """Predict an image file -> (vote map or maps, or None when a `sink` is given; seconds spent reading).

        TIFFs over `stream_min_px` pixels are read in row windows (two passes: percentiles, then prediction);
        other files are read whole in their native dtype and normalised band by band.
        """
        if Path(split_frame(str(path))[0]).suffix.lower() in TIFF_EXT:
            with TiffRowReader(path) as reader:
                h, w = reader.height, reader.width
                if h * w > stream_min_px:
                    def rows(a: int, b: int) -> np.ndarray:
                        return to_channels(reader.read(a, b), self.channels, str(path))

                    lo, hi = streamed_intensity_range(rows, (h, w, self.channels), reader.dtype,
                                                      self.options.norm_low, self.options.norm_high)
                    result = self._run(lambda a, b: normalize_rows(rows(a, b), lo, hi), h, w, sink)
                    return result, reader.read_seconds
        t0 = time.perf_counter()
        image = read_image(path, self.channels)
        read_s = time.perf_counter() - t0
        return self.predict_image(image, sink), read_s
