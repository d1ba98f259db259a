"""Offline patch export: cut every image/mask pair of a manifest into fixed-size tiles on disk, plus a manifest.

Some of the papers the package follows (README, Sources) cut their training images into fixed-size tiles once,
before training, instead of sampling random patches on the fly. `export_patches` does the same: each pair is cut on a regular
grid with `patchify` (tiles of `size` px every `step` px; step < size overlaps them) and each tile is written to
OUT/images/ and OUT/masks/ as `<stem>_rRRR_cCCC.<ext>`, with OUT/manifest.csv listing the tiles under the split (and
dataset, modality, fold) of the row they came from.

Padding: an image whose height or width does not land on the grid (H is not size + k·step, e.g. not a multiple of
`size` when step = size) is padded at the bottom/right by reflection (numpy "symmetric", so the edge row is
repeated once) up to the next grid line, the image and its mask alike, so every tile is full-size and shows
plausible content. A mask object mirrored into the padding keeps its id (the copy of an object that touches the
edge joins it; one that does not becomes a second region with the same id).

Values are kept as stored: images keep their dtype and bands (uint8/uint16 grey or RGB -> PNG; TIFF sources, float,
2- or 4-band images -> TIFF), masks keep their values, so instance ids survive: uint8 PNG when the largest id fits
in 8 bits, uint16 PNG up to 65535, int32 TIFF above. A pair that cannot be read (corrupt file, mask size differs
from the image, non-integer mask) is reported as (file, problem) and skipped; the rest go on.

Tiles of one image are separate manifest rows: validation picked at random from them (training's automatic 20 %,
cross-validation without a fold column) would mix tiles of one image into training and validation. Give the source
manifest val rows or a fold column; both are carried to every tile.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import read_mask, read_raw, write_png
from .manifest import Sample, _parse_manifest, output_stem, select, split_frame, write_manifest
from .tiff import TIFF_EXT, ImageReadError, write_tiff


@dataclass
class PatchExport:
    """Result of `export_patches`: the tile manifest, counts, and the pairs skipped as (file, problem)."""

    manifest: Path
    tiles: int
    images: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def grid_length(length: int, size: int, step: int) -> int:
    """Smallest L >= max(length, size) with (L - size) a multiple of `step`: the padded length of one axis."""
    if size < 1 or not 1 <= step <= size:
        raise ValueError(f"need size >= 1 and 1 <= step <= size, got size {size}, step {step}")
    extra = max(length - size, 0)
    return size + -(-extra // step) * step


def pad_to_grid(array: np.ndarray, size: int, step: int) -> np.ndarray:
    """Reflect-pad (H, W[, C]) at the bottom/right to (grid_length(H), grid_length(W)[, C]); same dtype.

    Reflection is numpy's "symmetric" mode (edge pixel repeated), which also works for pads wider than the image.
    """
    h, w = array.shape[:2]
    th, tw = grid_length(h, size, step), grid_length(w, size, step)
    if (th, tw) == (h, w):
        return array
    pads = [(0, th - h), (0, tw - w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pads, mode="symmetric")


def cut_patches(array: np.ndarray, size: int, step: int | None = None) -> np.ndarray:
    """(H, W) or (H, W, C) -> (rows, cols, size, size[, C]) tiles of the grid-padded array (see `pad_to_grid`).

    Tile (r, c) starts at pixel (r·step, c·step) of the padded array; `patchify.unpatchify(tiles, padded.shape)`
    (2-D) puts them back. Tiles are a read-only view of the padded array, not copies.
    """
    from patchify import patchify

    step = size if step is None else step
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {arr.shape}")
    padded = pad_to_grid(arr, size, step)
    if arr.ndim == 2:
        return patchify(padded, (size, size), step=step)
    return patchify(padded, (size, size, padded.shape[-1]), step=step)[:, :, 0]


def _tile_suffix(array: np.ndarray, source: str) -> str:
    """'.png' when PNG holds the array losslessly and the source was not a TIFF, else '.tif'."""
    pngable = array.dtype in (np.uint8, np.uint16) and (array.ndim == 2 or array.shape[-1] in (1, 3))
    return ".png" if pngable and Path(split_frame(source)[0]).suffix.lower() not in TIFF_EXT else ".tif"


def _mask_storage(labels: np.ndarray) -> tuple[np.ndarray, str]:
    """int32 labels -> (the narrowest dtype holding them, '.png' or '.tif')."""
    top = int(labels.max()) if labels.size else 0
    if top <= np.iinfo(np.uint8).max:
        return labels.astype(np.uint8), ".png"
    if top <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16), ".png"
    return labels.astype(np.int32), ".tif"


def _write(path: Path, tile: np.ndarray) -> Path:
    if path.suffix == ".png":
        return write_png(path, tile[..., 0] if tile.ndim == 3 and tile.shape[-1] == 1 else tile)
    return write_tiff(path, tile)


def _read_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """(image (H, W, bands) as stored, mask (H, W) int32 or None); sizes checked, errors name the file."""
    image = read_raw(sample.image)
    if sample.mask is None:
        return image, None
    mask = read_mask(sample.mask, instances=True)
    if mask.shape != image.shape[:2]:
        raise ImageReadError(f"{sample.mask}: mask is {mask.shape[0]}×{mask.shape[1]} but image {sample.image} is "
                             f"{image.shape[0]}×{image.shape[1]}")
    return image, mask


def export_patches(manifest: str | os.PathLike, out_dir: str | os.PathLike, size: int = 256,
                   step: int | None = None, split: str | None = "train", verbose: int = 1) -> PatchExport:
    """Cut the `split` rows of `manifest` (None = every row) into size×size tiles every `step` px (default: size).

    Writes OUT/images/, OUT/masks/ and OUT/manifest.csv (see the module docstring); files are written atomically and
    inputs are never modified. Rows without a mask (test images) give image tiles only. verbose=0 hides the
    progress bar. Raises ValueError when the split has no rows or when every row fails.
    """
    from tqdm.auto import tqdm

    step = size if step is None else step
    grid_length(size, size, step)  # validates size/step before any file is read
    out = Path(out_dir)
    samples = select(_parse_manifest(manifest), split)  # sizes are checked per pair below: a bad pair is skipped
    if not samples:
        raise ValueError(f"{manifest}: no rows in split {split!r}")
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []
    first_of: dict[str, str] = {}
    done = 0
    bar = tqdm(samples, desc="patches", unit="img", disable=not verbose)
    for s in bar:
        stem = output_stem(s.image)
        if stem in first_of:  # two sources with one stem would overwrite each other's tiles
            failures.append((s.image, f"tile name {stem!r} is already used by {first_of[stem]}; rename one"))
            continue
        try:
            image, mask = _read_pair(s)
        except (ImageReadError, ValueError, OSError) as exc:
            failures.append((s.image, str(exc)))
            bar.set_postfix(failed=len(failures), refresh=False)
            continue
        first_of[stem] = s.image
        image_tiles = cut_patches(image, size, step)
        image_suffix = _tile_suffix(image, s.image)
        if mask is not None:
            stored, mask_suffix = _mask_storage(mask)
            mask_tiles = cut_patches(stored, size, step)
        extra = {k: v for k, v in (("dataset", s.dataset), ("modality", s.modality), ("fold", s.fold))
                 if v not in ("", None)}
        for r in range(image_tiles.shape[0]):
            for c in range(image_tiles.shape[1]):
                name = f"{stem}_r{r:03d}_c{c:03d}"
                ip = _write(out / "images" / f"{name}{image_suffix}", image_tiles[r, c])
                mp = _write(out / "masks" / f"{name}{mask_suffix}", mask_tiles[r, c]) if mask is not None else ""
                rows.append({"image": str(ip), "mask": str(mp), "split": s.split, **extra})
        done += 1
        bar.set_postfix(failed=len(failures), refresh=False)
    if not rows:
        raise ValueError(f"{manifest}: every row failed: " + "; ".join(f"{f}: {r}" for f, r in failures[:5]))
    return PatchExport(write_manifest(out / "manifest.csv", rows), len(rows), done, failures)
