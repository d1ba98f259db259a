"""Cutting images into tiles and putting them back.

Two layouts: the non-overlapping grid of seed 002 (`grid_patches`/`grid_unpatch`, via patchify with step = patch size)
and overlapping tiles with smooth blending (`tile_origins`, `extract_tiles`, `stitch_tiles`), whose stitch is an
exact inverse of extract for any weights.
"""
from __future__ import annotations

import numpy as np

from .preprocessing import pad_to_multiple


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


def blend_window(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """(tile, tile) float32 weights: 1 in the centre, raised-cosine ramps of `overlap` px towards each edge.

    Never exactly 0, so corners covered by a single tile still count. Overlapping tiles blended with it show no
    seams.
    """
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        up = 0.5 - 0.5 * np.cos(np.pi * t)
        ramp[:overlap] = up
        ramp[tile - overlap:] = up[::-1]
    ramp = np.maximum(ramp, floor)
    return np.outer(ramp, ramp).astype(np.float32)


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


def stitch_tiles(tiles: np.ndarray, origins: list[tuple[int, int]], shape: tuple[int, int], overlap: int) -> np.ndarray:
    """Inverse of `extract_tiles`: (N, t, t, C) -> (H, W, C), overlaps blended with `blend_window`."""
    t = tiles.shape[1]
    acc = TileAccumulator((shape[0], shape[1], tiles.shape[-1]), blend_window(t, overlap))
    acc.add(tiles, origins)
    return acc.result()


def grid_patches(image: np.ndarray, patch: int, pad_mode: str = "zero") -> tuple[np.ndarray, tuple[int, int]]:
    """Seed 002's non-overlapping grid: pad (H, W, C) to multiples of `patch`, patchify with step = patch.

    Returns (patches (rows, cols, patch, patch, C), padded (H', W')).
    """
    from patchify import patchify

    padded = pad_to_multiple(image, patch, mode=pad_mode)
    c = padded.shape[-1]
    p = patchify(padded, (patch, patch, c), step=patch)  # (rows, cols, 1, patch, patch, C)
    return p[:, :, 0], padded.shape[:2]


def grid_unpatch(patches: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `grid_patches`: (rows, cols, patch, patch, C) -> (H, W, C) cropped to the original `shape`."""
    from patchify import unpatchify

    rows, cols, p, _, c = patches.shape
    full = unpatchify(patches[:, :, None], (rows * p, cols * p, c))
    return full[: shape[0], : shape[1]]
