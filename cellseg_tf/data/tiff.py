"""TIFF files, read and written in one place (rasterio/GDAL): whole images, pages of stacks, windows of rows.

- `read_tiff(path, frame)`: (H, W, bands) in the stored dtype; `tiff_shape(path, frame)`: (H, W, bands) from the
  header; `tiff_pages(path)`: pages of a multi-page stack; `tiff_target(path, frame)`: the GDAL name of one page;
- `TiffRowReader`: windowed reads of row bands, so an 8192×8192 16-bit image never sits in memory as float;
- `write_tiff(path, array)`: one (multi-band) page, atomically; `TiffRowWriter`: rows streamed into a new TIFF
  (the temp file of a `common.files.atomic_path`, say).

Pages: GDAL's GTiff driver exposes every page (IFD) of a multi-page TIFF as a sub-dataset (overviews and masks are
not pages) and opens page k with its connection string `GTIFF_DIR:k:path` (1-based); see the "Multi-page TIFF"
section of https://gdal.org/drivers/raster/gtiff.html. rasterio lists the sub-datasets in `dataset.subdatasets`.
A stack read without a page number is an error, never silently its first page.

Microscopy TIFFs carry no georeferencing, so rasterio's NotGeoreferencedWarning (raised when a dataset is opened)
is silenced in `open_tiff`, the one function here that opens a TIFF, and nowhere else.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ..common.files import atomic_path
from .manifest import split_frame

TIFF_EXT = (".tif", ".tiff")
GDAL_CACHE_MB = 64  # block cache of windowed reads: big images are read once, a large cache only grows memory


class ImageReadError(ValueError):
    """An image or mask file cannot be used; the message names the file and the problem."""


def open_tiff(target: str | os.PathLike, mode: str = "r", **profile):
    """`rasterio.open(target, mode, **profile)` without the NotGeoreferencedWarning; returns the open dataset."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(target, mode, **profile)


def tiff_pages(path: str | os.PathLike) -> int:
    """Number of pages of a TIFF (1 for a single-page file, bands of one page do not count)."""
    try:
        with open_tiff(path) as src:
            return max(1, len(src.subdatasets))
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read TIFF ({exc})") from exc


def tiff_target(path: str | os.PathLike, frame: int | None) -> str:
    """The name rasterio opens for `path` (frame None: the file must be single-page) or for page `frame` (0-based)."""
    path = str(path)
    pages = tiff_pages(path)
    if frame is None:
        if pages > 1:
            raise ImageReadError(f"{path}: multi-page TIFF with {pages} pages; address one page as "
                                 f"'{Path(path).name}#k' (k = 0..{pages - 1}) or split the stack into a manifest "
                                 "with cellseg_tf.data.stacks.stack_manifest")
        return path
    if not 0 <= frame < pages:
        raise ImageReadError(f"{path}: frame {frame} requested but the file has {pages} page(s) (0..{pages - 1})")
    return f"GTIFF_DIR:{frame + 1}:{path}" if pages > 1 else path


def read_tiff(path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
    """Page `frame` (None: the only page) of a TIFF as (H, W, bands) in its stored dtype."""
    target = tiff_target(path, frame)
    try:
        with open_tiff(target) as src:
            data = src.read()  # (bands, H, W)
    except Exception as exc:
        what = f"frame {frame} of " if frame is not None else ""
        raise ImageReadError(f"{path}: cannot read {what}TIFF ({exc})") from exc
    return np.moveaxis(data, 0, -1)


def tiff_shape(path: str | os.PathLike, frame: int | None = None) -> tuple[int, int, int]:
    """(H, W, bands) of page `frame` of a TIFF, from its header (no pixels are read)."""
    target = tiff_target(path, frame)
    try:
        with open_tiff(target) as src:
            return src.height, src.width, src.count
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read TIFF header ({exc})") from exc


class TiffRowReader:
    """Windowed reads of a TIFF (or of page k of a stack, `stack.tif#k`) as (n, W, bands) rows in the stored dtype.

    Use as a context manager. `height`, `width`, `bands` and `dtype` are known once entered; `read_seconds` sums the
    time spent in `read`. Float rows containing NaN or Inf are an error naming the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.read_seconds = 0.0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "TiffRowReader":
        import rasterio

        base, frame = split_frame(self.path)
        if not Path(base).is_file():
            raise ImageReadError(f"{base}: file not found")
        target = tiff_target(base, frame)
        self._stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        try:
            self.src = self._stack.enter_context(open_tiff(target))
        except Exception as exc:
            self._stack.close()
            raise ImageReadError(f"{self.path}: cannot read TIFF ({exc})") from exc
        self.height, self.width, self.bands = self.src.height, self.src.width, self.src.count
        self.dtype = np.dtype(self.src.dtypes[0])
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def read(self, r0: int, r1: int) -> np.ndarray:
        """Rows r0..r1 (exclusive) as (r1 - r0, W, bands)."""
        from rasterio.windows import Window

        t0 = time.perf_counter()
        try:
            data = self.src.read(window=Window(0, r0, self.width, r1 - r0))
        except Exception as exc:
            raise ImageReadError(f"{self.path}: cannot read rows {r0}-{r1} ({exc})") from exc
        rows = np.moveaxis(data, 0, -1)
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise ImageReadError(f"{self.path}: image contains NaN or Inf values")
        self.read_seconds += time.perf_counter() - t0
        return rows


class TiffRowWriter:
    """A new single-page TIFF of (height, width, bands) filled row band by row band; use as a context manager.

    write(r0, rows): rows (n, W) or (n, W, bands) go to rows r0..r0+n. The file is complete once the writer is
    closed; write into the temp path of `atomic_path` so that readers never see a partial file.
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, dtype="float32", bands: int = 1):
        self.path, self.height, self.width = Path(path), height, width
        self.dtype, self.bands = np.dtype(dtype), bands
        self.dst = None

    def __enter__(self) -> "TiffRowWriter":
        self.dst = open_tiff(self.path, "w", driver="GTiff", height=self.height, width=self.width, count=self.bands,
                             dtype=self.dtype.name)
        return self

    def write(self, r0: int, rows: np.ndarray) -> None:
        from rasterio.windows import Window

        rows = np.asarray(rows, self.dtype)
        rows = rows[..., None] if rows.ndim == 2 else rows
        self.dst.write(np.moveaxis(rows, -1, 0), window=Window(0, r0, self.width, rows.shape[0]))

    def __exit__(self, *exc) -> None:
        if self.dst is not None:
            self.dst.close()
            self.dst = None


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an (H, W) or (H, W, C) array as one (C-band) TIFF page, atomically; returns `path`."""
    path = Path(path)
    arr = np.asarray(array)
    arr = arr[..., None] if arr.ndim == 2 else arr
    with atomic_path(path) as tmp:
        with TiffRowWriter(tmp, arr.shape[0], arr.shape[1], arr.dtype, arr.shape[2]) as writer:
            writer.write(0, arr)
    return path
