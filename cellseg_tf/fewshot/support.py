"""The support set: which manifest rows, which of their pixels, and the extractors' features at those pixels.

Rows: the manifest's split=train rows, K of them drawn with a seed (`draw_support`), read and normalised exactly like
training does (`data.dataset.load_pair`: the run's percentiles, the extractors' channels).

Pixels (`sample_pixels`): from every support image up to `per_class` foreground and `per_class` background pixels,
drawn with a seeded generator — balanced classes, and a memory cap of 2·per_class·K pixels whatever the image sizes.
On large images they come from at most `max_tiles` feature tiles (half with foreground, half without, when there are
more; by default as many as make 2¹⁷ tile pixels, and 5·2¹⁷ over all support images), which caps the extractor
work per image and per adaptation. Each sampled pixel carries a weight: the number of image pixels it stands for
(tile stratum size / tiles chosen from it × class pixels in the chosen tiles / class pixels drawn), so weighted sums
over the sample are unbiased estimates of sums over the whole support images — a Dice on the sample estimates the
Dice on the images despite the balancing.

Features (`gather_features`): the image is reflect-padded and cut into tiles of the extractors' input size that
overlap by a margin (1/8 tile) on every side (`TileGrid`); each pixel's feature vector comes from the tile in whose
centre part it lies, so every pixel sees context on all sides, and only the tiles holding sampled pixels are
computed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..data.dataset import Pair, load_pair
from ..data.io import open_manifest
from ..data.manifest import Sample, select

DEFAULT_TILE = 256        # tile size for extractors that accept any size
TILE_MULTIPLE = 32        # ... rounded to a multiple of the largest stride in the zoo
TILE_PIXELS = 1 << 17     # default cap on feature-tile pixels computed per support image (8 tiles of 128²;
                          # chosen on validation rows, docs/FEWSHOT.md "Feature tiles, measured")
SUPPORT_TILE_PIXELS = 5 * TILE_PIXELS   # ... and over the whole support set: beyond 5 images, fewer tiles each
                                        # (validation rows, docs/FEWSHOT.md "Fewer feature tiles beyond 5 shots")
MIN_TILES = 4


def default_max_tiles(tile: int, shots: int | None = None) -> int:
    """Tiles per support image: TILE_PIXELS of them (8 at 128 px, 4 at 256 px), fewer when `shots` images would
    exceed SUPPORT_TILE_PIXELS together (4 of 128² each at K = 10), never under MIN_TILES."""
    per_image = math.ceil(TILE_PIXELS / tile ** 2)
    if shots:
        per_image = min(per_image, math.ceil(SUPPORT_TILE_PIXELS / (shots * tile ** 2)))
    return max(MIN_TILES, per_image)


def draw_support(manifest: str | os.PathLike, shots: int | None = None, seed: int = 0) -> tuple[list[Sample], int]:
    """(K train rows drawn with `seed`, in manifest order; number of train rows available). shots=None: all."""
    train = select(open_manifest(manifest), "train")
    if not train:
        raise ValueError(f"{manifest}: no split=train rows to adapt on (the support set is the train split)")
    if shots is None:
        return train, len(train)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if shots > len(train):
        raise ValueError(f"{manifest}: {shots} shots asked for but the manifest has only {len(train)} train row(s)")
    picked = np.sort(np.random.default_rng(seed).choice(len(train), shots, replace=False))
    return [train[i] for i in picked], len(train)


def load_support(samples: Sequence[Sample], channels: int, low: float, high: float,
                 mask_threshold: float = 0.0) -> list[Pair]:
    """Read and normalise the support rows; a mask without foreground is an error naming the row and the file."""
    pairs = []
    for s in samples:
        pair = load_pair(s, channels, low, high, mask_threshold)
        if not pair.mask.any():
            raise ValueError(f"{s.mask}: support row {s.row} ({s.image}) has no foreground pixels; a support image "
                             "must show the structure to learn (or raise --mask-threshold if the mask is anti-aliased)")
        pairs.append(pair)
    if all(p.mask.all() for p in pairs):
        raise ValueError("the support masks are foreground everywhere: nothing tells the structure from background")
    return pairs


@dataclass
class PixelSample:
    """Sampled support pixels: x (n, d) float32 features, y (n,) float32 {0, 1}, weight (n,) float64 > 0,
    group (n,) int32 index of the support image."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    group: np.ndarray

    @property
    def counts(self) -> dict[str, int]:
        fg = int((self.y > 0).sum())
        return {"pixels": int(len(self.y)), "foreground": fg, "background": int(len(self.y)) - fg,
                "features": int(self.x.shape[1])}


@dataclass(frozen=True)
class TileGrid:
    """How an (H, W) image is cut for feature extraction: tiles of `tile` px whose centre `core` parts (tile minus a
    `margin` on every side) tile the image; tile t covers core cell (t // n_x, t % n_x)."""

    tile: int

    @property
    def margin(self) -> int:
        return self.tile // 8

    @property
    def core(self) -> int:
        return self.tile - 2 * self.margin

    def cells(self, h: int, w: int) -> tuple[int, int]:
        """(n_y, n_x) core cells covering an h × w image."""
        return math.ceil(h / self.core), math.ceil(w / self.core)

    def tile_ids(self, h: int, w: int) -> np.ndarray:
        """(h, w) int: the tile whose core holds each pixel."""
        n_x = self.cells(h, w)[1]
        return (np.arange(h)[:, None] // self.core) * n_x + np.arange(w)[None, :] // self.core


def _choose_tiles(ids: np.ndarray, fg: np.ndarray, max_tiles: int | None, rng: np.random.Generator) -> np.ndarray:
    """(n_tiles,) expansion factor per tile: 0 = not chosen, else (tiles of its stratum) / (chosen of them).

    All tiles when there are at most `max_tiles`; else about half of the chosen tiles hold foreground and half do
    not (strata drawn uniformly), so a sparse structure is not missed and the estimate stays unbiased."""
    n_tiles = int(ids.max()) + 1
    with_fg = np.bincount(ids[fg], minlength=n_tiles) > 0
    if max_tiles is None or n_tiles <= max_tiles:
        return np.ones(n_tiles)
    strata = [np.flatnonzero(with_fg), np.flatnonzero(~with_fg)]
    n_f = min(len(strata[0]), math.ceil(max_tiles / 2))
    n_b = min(len(strata[1]), max_tiles - n_f)
    n_f = min(len(strata[0]), max_tiles - n_b)
    expansion = np.zeros(n_tiles)
    for members, n in zip(strata, (n_f, n_b)):
        if n:
            expansion[rng.choice(members, n, replace=False)] = len(members) / n
    return expansion


def sample_pixels(mask: np.ndarray, per_class: int, rng: np.random.Generator, grid: TileGrid | None = None,
                  max_tiles: int | None = None):
    """Up to `per_class` foreground and background pixels of a (H, W) mask, drawn without replacement, from at
    most `max_tiles` tiles of `grid` (all pixels when no grid is given).

    Returns (rows, cols, labels, weights), each (n,). A pixel's weight is the number of image pixels it stands for:
    (its tile stratum's expansion) × (class pixels in the chosen tiles / class pixels drawn), so weighted sums over the
    sample are unbiased estimates of sums over the whole image.
    """
    mask = np.asarray(mask) > 0
    h, w = mask.shape
    if grid is None:
        ids, expansion = np.zeros(h * w, np.int64), np.ones(1)
    else:
        ids = grid.tile_ids(h, w).reshape(-1)
        expansion = _choose_tiles(ids, mask.reshape(-1), max_tiles, rng)
    flat = mask.reshape(-1)
    picks, labels, weights = [], [], []
    for label in (1, 0):
        where = np.flatnonzero((flat == bool(label)) & (expansion[ids] > 0))
        if len(where) == 0:
            continue
        n = min(per_class, len(where))
        chosen = np.sort(rng.choice(where, n, replace=False))
        picks.append(chosen)
        labels.append(np.full(n, label, np.float32))
        weights.append(expansion[ids[chosen]] * len(where) / n)
    idx = np.concatenate(picks)
    rows, cols = np.divmod(idx, w)
    return rows, cols, np.concatenate(labels), np.concatenate(weights)


def tile_size(input_shape: tuple, images: Sequence[np.ndarray], requested: int | None = None) -> int:
    """Tile side: the extractors' fixed input size, else `requested`, else the largest image side rounded up to a
    multiple of TILE_MULTIPLE and capped at DEFAULT_TILE."""
    h, w = input_shape[:2]
    if h is not None or w is not None:
        if h != w:
            raise ValueError(f"extractors with a non-square input ({h}×{w}) are not supported")
        return int(h)
    if requested:
        return int(requested)
    side = max(max(im.shape[:2]) for im in images)
    return int(min(DEFAULT_TILE, math.ceil(side / TILE_MULTIPLE) * TILE_MULTIPLE))


def gather_features(features_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, rows: np.ndarray,
                    cols: np.ndarray, grid: TileGrid, batch_size: int = 4) -> np.ndarray:
    """Features at pixels (rows, cols) of `image` (H, W, C) float32 -> (n, d) float32.

    Only the tiles of `grid` whose cores hold a requested pixel are computed. features_fn maps a (B, tile, tile, C)
    batch to (B, tile, tile, d); batches always hold `batch_size` tiles (the last one padded), so a compiled
    function sees one shape.
    """
    tile, margin, core = grid.tile, grid.margin, grid.core
    h, w = image.shape[:2]
    n_y, n_x = grid.cells(h, w)
    padded = np.pad(image, [(margin, n_y * core + margin - h), (margin, n_x * core + margin - w), (0, 0)],
                    mode="symmetric")
    tile_id = (rows // core) * n_x + cols // core
    order = np.argsort(tile_id, kind="stable")
    needed = np.unique(tile_id)
    out: np.ndarray | None = None
    for start in range(0, len(needed), batch_size):
        ids = needed[start:start + batch_size]
        batch = np.zeros((batch_size, tile, tile, image.shape[2]), np.float32)
        for j, t in enumerate(ids):
            y0, x0 = (t // n_x) * core, (t % n_x) * core
            batch[j] = padded[y0:y0 + tile, x0:x0 + tile]
        maps = np.asarray(features_fn(batch))
        if maps.shape[1:3] != (tile, tile):
            raise ValueError(f"the extractors returned {maps.shape[1]}×{maps.shape[2]} feature maps for "
                             f"{tile}×{tile} tiles; few-shot adaptation needs full-resolution features")
        if out is None:
            out = np.empty((len(rows), maps.shape[-1]), np.float32)
        for j, t in enumerate(ids):
            lo, hi = np.searchsorted(tile_id[order], [t, t + 1])
            sel = order[lo:hi]
            out[sel] = maps[j, rows[sel] % core + margin, cols[sel] % core + margin]
    return out


def sample_support(features_fn: Callable[[np.ndarray], np.ndarray], pairs: Sequence[Pair], max_pixels: int,
                   seed: int, tile: int, max_tiles: int | None = None, batch_size: int = 4,
                   progress: bool = False) -> PixelSample:
    """Balanced, weighted pixel sample of all support images with their features: at most `max_pixels` pixels from
    at most `max_tiles` tiles per image (None: `default_max_tiles(tile, len(pairs))`)."""
    import keras

    grid = TileGrid(tile)
    max_tiles = max_tiles or default_max_tiles(tile, len(pairs))
    per_class = max(1, max_pixels // (2 * len(pairs)))
    rng = np.random.default_rng(seed)
    xs, ys, ws, gs = [], [], [], []
    bar = keras.utils.Progbar(len(pairs), unit_name="image") if progress else None
    for i, pair in enumerate(pairs):
        rows, cols, labels, weights = sample_pixels(pair.mask, per_class, rng, grid, max_tiles)
        xs.append(gather_features(features_fn, pair.image, rows, cols, grid, batch_size))
        ys.append(labels)
        ws.append(weights)
        gs.append(np.full(len(labels), i, np.int32))
        if bar is not None:
            bar.update(i + 1)
    weight = np.concatenate(ws)
    return PixelSample(np.concatenate(xs), np.concatenate(ys), weight * len(weight) / weight.sum(), np.concatenate(gs))
