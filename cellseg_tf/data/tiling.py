"""Cutting images into overlapping tiles and blending tiles back.

`tile_origins`/`extract_tiles` place fixed-size tiles that overlap by at least `overlap` px and cover an image (the
last tile is aligned to the end); `blend_window` is the raised-cosine weight that hides their seams, and
`TileAccumulator` sums weighted tiles into a canvas (an exact inverse of `extract_tiles` for any weights).
`tile_layout` pads an image (by index maps, nothing is copied) and places the tiles of the streaming predictor,
whose non-overlapping grid (`--tiling grid`) is then cut by `patchify`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis so tiles of `tile` px overlapping by >= `overlap` px cover [0, length).

    length must be >= tile (pad first). The last tile is aligned to the end, so no tile leaves the image.
    """
    if length < tile:
        raise ValueError(f"axis of {length} px is smaller than the tile ({tile} px); pad it first")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_origins(shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int]]:
    """(y, x) origins of all tiles covering an (H, W) image (H, W >= tile), row-major."""
    ys = axis_origins(shape[0], tile, overlap)
    xs = axis_origins(shape[1], tile, overlap)
    return [(y, x) for y in ys for x in xs]


def extract_tiles(image: np.ndarray, origins: list[tuple[int, int]], tile: int) -> np.ndarray:
    """(H, W, C) image -> (N, tile, tile, C) tiles at `origins`."""
    return np.stack([image[y:y + tile, x:x + tile] for y, x in origins])


def blend_ramp(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """(tile,) float32 profile: 1 in the centre, raised-cosine ramps of `overlap` px towards both ends, never below
    `floor` (so corners covered by a single tile still count). All ones when overlap is 0."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        up = 0.5 - 0.5 * np.cos(np.pi * t)
        ramp[:overlap] = up
        ramp[tile - overlap:] = up[::-1]
    return np.maximum(ramp, floor).astype(np.float32)


def blend_window(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """(tile, tile) float32 weights, the outer product of `blend_ramp` with itself. Overlapping tiles blended with
    it show no seams."""
    ramp = blend_ramp(tile, overlap, floor)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass
class TileLayout:
    """Where the tiles of an (h, w) image go: the padded image is `image[row_map][:, col_map]` (numpy 'symmetric'
    reflection), tiles start at rows `ys` × columns `xs` of it, and the summed blend weight of padded pixel (i, j)
    is `cov_y[i] * cov_x[j]` (the window is separable)."""

    h: int
    w: int
    top: int              # padding above / left of the image
    left: int
    row_map: np.ndarray   # (H',) source row of each padded row
    col_map: np.ndarray   # (W',)
    ys: list[int]
    xs: list[int]
    cov_y: np.ndarray     # (H',) float32
    cov_x: np.ndarray     # (W',) float32


def tile_layout(h: int, w: int, tile: int, overlap: int, grid: bool = False) -> TileLayout:
    """The tiles covering an (h, w) image. grid: a non-overlapping grid, the image reflect-padded at the bottom/right
    to a multiple of `tile`; else tiles overlapping by >= `overlap` px (weighted by `blend_ramp`), the image
    reflect-padded by overlap // 2 on every side (and up to one tile)."""
    if grid:
        overlap, top = 0, 0
        bottom, right = max(tile, -(-h // tile) * tile) - h, max(tile, -(-w // tile) * tile) - w
    else:
        top = overlap // 2
        bottom, right = top + max(0, tile - (h + 2 * top)), top + max(0, tile - (w + 2 * top))
    row_map = np.pad(np.arange(h), (top, bottom), mode="symmetric")
    col_map = np.pad(np.arange(w), (top, right), mode="symmetric")
    ramp = blend_ramp(tile, overlap)
    ys, xs = axis_origins(len(row_map), tile, overlap), axis_origins(len(col_map), tile, overlap)
    cov_y, cov_x = np.zeros(len(row_map), np.float32), np.zeros(len(col_map), np.float32)
    for y in ys:
        cov_y[y:y + tile] += ramp
    for x in xs:
        cov_x[x:x + tile] += ramp
    return TileLayout(h, w, top, top, row_map, col_map, ys, xs, cov_y, cov_x)


class TileAccumulator:
    """Weighted running sum of tile predictions over an (H, W, C) canvas; `result()` is the blended image."""

    def __init__(self, shape: tuple[int, int, int], window: np.ndarray):
        self.sum = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape[:2] + (1,), np.float32)
        self.window = window[..., None]

    def add(self, tiles: np.ndarray, origins: list[tuple[int, int]]) -> None:
        t = self.window.shape[0]
        for tile, (y, x) in zip(tiles, origins):
            self.sum[y:y + t, x:x + t] += tile * self.window
            self.weight[y:y + t, x:x + t] += self.window

    def result(self) -> np.ndarray:
        if (self.weight <= 0).any():
            raise ValueError("some pixels were covered by no tile")
        return self.sum / self.weight
