"""File I/O: read images and masks (TIFF through `data.tiff`, PNG/JPG via OpenCV), find the inputs of a job
(`resolve_inputs`, `expand_model_list`), write outputs atomically.

Readers return native dtypes (uint8/uint16/float32) so 16-bit range is kept until normalisation. Multi-page TIFF
stacks are read one page at a time (`stack.tif#k`; a stack read without `#k` is an error, never its first page).
Channels are explicit (`channels=1|3`); masks are binary, thresholded, or instance labels. Every error names the
file and the problem. Inputs are never modified.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..common.files import write_bytes_atomic, write_text_atomic  # write_text_atomic: re-exported
from .manifest import ManifestError, Sample, _parse_manifest, select, split_frame
from .tiff import TIFF_EXT, ImageReadError, read_tiff, tiff_pages, tiff_shape, write_tiff  # noqa: F401  (re-exported)

OPENCV_EXT = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_EXT = TIFF_EXT + OPENCV_EXT


class LabelValueError(ImageReadError):
    """A mask read as instance labels holds values that are not labels (fractions, negatives, ids >= 2^31)."""


def page_count(path: str | os.PathLike) -> int:
    """Pages of a multi-page TIFF stack (1 for single-page TIFF and for PNG/JPG)."""
    base, _ = split_frame(str(path))
    if not Path(base).is_file():
        raise ImageReadError(f"{base}: file not found")
    if Path(base).suffix.lower() in TIFF_EXT:
        return tiff_pages(base)
    return 1


def _read_opencv(path: str) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ImageReadError(f"{path}: cannot decode image (corrupt or unsupported file)")
    if arr.ndim == 2:
        return arr[..., None]
    if arr.shape[-1] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read a file as stored: (H, W, bands) in its native dtype. `path#k` reads frame k of a multi-page TIFF."""
    base, frame = split_frame(str(path))
    p = Path(base)
    if not p.is_file():
        raise ImageReadError(f"{base}: file not found")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{base}: file is empty")
    ext = p.suffix.lower()
    if ext in TIFF_EXT:
        arr = read_tiff(base, frame)
    elif ext in OPENCV_EXT:
        if frame is not None:
            raise ImageReadError(f"{path}: frame selection '#k' only applies to multi-page TIFF")
        arr = _read_opencv(base)
    else:
        raise ImageReadError(f"{base}: unsupported extension {ext!r}; use one of {', '.join(IMAGE_EXT)}")
    if arr.size == 0:
        raise ImageReadError(f"{path}: image has no pixels")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ImageReadError(f"{path}: image contains NaN or Inf values")
    return arr


def to_channels(arr: np.ndarray, channels: int, path: str = "<array>") -> np.ndarray:
    """Convert (H, W, bands) to exactly `channels` (1 or 3) bands, explicitly.

    grey->3 repeats the band; RGBA drops alpha; RGB->1 is allowed only when the three bands are identical (a grey
    image saved as RGB); a real colour image asked for as grey is an error, never a silent conversion.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    bands = arr.shape[-1]
    if bands == 4:
        arr, bands = arr[..., :3], 3
    if bands == 2:  # grey + alpha
        arr, bands = arr[..., :1], 1
    if bands == channels:
        return arr
    if bands == 1 and channels == 3:
        return np.repeat(arr, 3, axis=-1)
    if bands == 3 and channels == 1:
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return arr[..., :1]
        raise ImageReadError(f"{path}: image is RGB (colour) but channels=1 was asked; "
                             "set channels=3, or convert it to grey yourself")
    raise ImageReadError(f"{path}: image has {bands} bands; expected 1 (grey), 3 (RGB) or 4 (RGBA)")


def read_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """Read an image as (H, W, channels) in its native dtype (uint8/uint16/float32...)."""
    return to_channels(read_raw(path), channels, str(path))


def outline_rings(binary: np.ndarray, max_half_width: float = 3.0, min_area: int = 8) -> tuple[int, int, float]:
    """Find foreground components that are thin closed rings: (n_rings, n_components, ring share of foreground px).

    binary: (H, W) bool/{0,1}. A ring is a component with exactly one enclosed hole of at least half its own area,
    and no pixel farther than `max_half_width` px from the background. Outline masks (cells drawn as contours) are
    made of such rings; a membrane network (ISBI EM) is one connected component with many holes, so it is not counted.
    """
    from scipy import ndimage

    fg = np.asarray(binary) > 0
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n < 3:
        return 0, n, 0.0
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 3)
    index = np.arange(1, n + 1)
    half_width = np.asarray(ndimage.maximum(dist, labels, index=index))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    thin = np.flatnonzero((half_width <= max_half_width + 0.5) & (areas >= min_area)) + 1
    rings, ring_px = 0, 0
    if len(thin) >= 3:  # only thin components can be rings; filled objects are skipped cheaply
        slices = ndimage.find_objects(labels)
        for i in thin:
            ys, xs = slices[i - 1]
            sub = labels[max(ys.start - 1, 0):ys.stop + 1, max(xs.start - 1, 0):xs.stop + 1] == i
            holes = ndimage.binary_fill_holes(sub) & ~sub
            _, n_holes = ndimage.label(holes)
            if n_holes == 1 and holes.sum() >= 0.5 * areas[i - 1]:
                rings += 1
                ring_px += int(areas[i - 1])
    return rings, n, ring_px / max(int(areas.sum()), 1)


def _check_not_outlines(fg: np.ndarray, path: str) -> None:
    n_rings, n, share = outline_rings(fg)
    if n_rings >= 3 and share >= 0.5:
        raise ImageReadError(
            f"{path}: mask looks like cell OUTLINES ({n_rings} of {n} objects are thin closed rings), but masks must "
            "mark whole objects; fill them first (scipy.ndimage.binary_fill_holes, or fill each instance), "
            "or read it with check_outlines=False if thin rings are really the target")


def read_mask(path: str | os.PathLike, threshold: float = 0, instances: bool = False,
              check_outlines: bool = False) -> np.ndarray:
    """Read a mask as (H, W): binary uint8 {0, 1} (pixel > threshold), or int32 instance labels if `instances`.

    Any nonzero value is foreground by default; use threshold=127 for anti-aliased 8-bit masks. Instance labels are
    kept as they are (0 = background; ids > 255 of 16-bit PNG/TIFF included) for instance metrics and targets;
    non-integer or negative labels are a `LabelValueError`.
    check_outlines: a mask that draws objects as separate thin closed rings (outlines) is an error with a hint;
    thin networks such as EM membranes are accepted (see `outline_rings`). On for training masks (`dataset.load_pair`),
    off by default so that predictions, which may legitimately be anything, are never rejected.
    """
    arr = read_raw(path)
    if arr.shape[-1] > 1:
        first = arr[..., 0]
        if not all(np.array_equal(first, arr[..., k]) for k in range(1, min(arr.shape[-1], 3))):
            raise ImageReadError(f"{path}: mask has {arr.shape[-1]} differing colour bands; "
                                 "expected a grey or label image")
        arr = arr[..., :1]
    arr = arr[..., 0]
    if instances:
        if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.round(arr)):
            raise LabelValueError(f"{path}: instance mask has non-integer values; "
                                  "expected integer labels (0 = background)")
        if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
            raise LabelValueError(f"{path}: instance labels must be in [0, 2^31); got {arr.min()}..{arr.max()}")
        out = arr.astype(np.int32)
        fg = out > 0
    else:
        out = (arr > threshold).astype(np.uint8)
        fg = out
    if check_outlines:
        _check_not_outlines(fg, str(path))
    return out


def image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(H, W, bands) of an image file, from its header where possible."""
    base, frame = split_frame(str(path))
    if Path(base).suffix.lower() in TIFF_EXT and Path(base).is_file():
        return tiff_shape(base, frame)
    arr = read_raw(path)
    return arr.shape[0], arr.shape[1], arr.shape[2]


def open_manifest(path: str | os.PathLike) -> list[Sample]:
    """Read and validate a manifest CSV: the one public way to load one. Returns its rows as `Sample`s (absolute paths).

    Raises ManifestError naming the file and row for a structural problem (see `manifest` module: missing columns or
    files, duplicates, unknown split, test/train leaks), an unreadable image or mask, or an image/mask pair whose
    H×W differ (read from file headers where the format allows).
    """
    samples = _parse_manifest(path)
    for s in samples:
        if s.mask is None:
            continue
        try:
            ish, msh = image_shape(s.image), image_shape(s.mask)
        except ImageReadError as exc:
            raise ManifestError(f"{path} row {s.row}: {exc}") from exc
        if ish[:2] != msh[:2]:
            raise ManifestError(f"{path} row {s.row}: mask {s.mask} is {msh[0]}×{msh[1]} "
                                f"but image {s.image} is {ish[0]}×{ish[1]}")
    return samples


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Image files under a folder (sorted), by extension."""
    root = Path(root)
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(str(p) for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXT)


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
        return _list_file(source)
    raise FileNotFoundError(f"{source}: no such folder, manifest or list file")


def _list_file(path: Path) -> list[str]:
    """The paths listed in a text file, one per line, relative to its folder; blank lines and '#' comments skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [str(Path(line) if Path(line).is_absolute() else path.parent / line)
            for line in lines if line and not line.startswith("#")]


def expand_model_list(models: "list[str | os.PathLike]") -> list[str]:
    """Model arguments -> `.keras` paths: a `.txt` file lists one model per line (relative to the list's folder;
    '#' comments), e.g. CVDIR/models.txt written by `cellseg-tf cv`."""
    paths: list[str] = []
    for m in map(Path, models):
        if m.suffix.lower() != ".txt":
            paths.append(str(m))
            continue
        if not m.is_file():
            raise FileNotFoundError(f"{m}: model list not found")
        listed = _list_file(m)
        if not listed:
            raise ValueError(f"{m}: the model list is empty")
        paths.extend(listed)
    return paths


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write a uint8/uint16 (H, W) or (H, W, 3 RGB) array as PNG (`common.files.write_bytes_atomic`)."""
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    return write_bytes_atomic(path, buf.tobytes())
