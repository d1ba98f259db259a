"""File I/O: read images and masks (TIFF via rasterio, PNG/JPG via OpenCV), write outputs atomically.

Readers return native dtypes (uint8/uint16/float32) so 16-bit range is kept until normalisation. Every error names
the file and the problem. Inputs are never modified.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

from .manifest import ManifestError, Sample, load_manifest, split_frame

TIFF_EXT = (".tif", ".tiff")
OPENCV_EXT = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_EXT = TIFF_EXT + OPENCV_EXT


class ImageReadError(ValueError):
    """An image or mask file cannot be used; the message names the file and the problem."""


def _read_tiff(path: str, frame: int | None) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    target = path if frame is None else f"GTIFF_DIR:{frame + 1}:{path}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(target) as src:
                data = src.read()  # (bands, H, W)
        except Exception as exc:
            what = f"frame {frame} of " if frame is not None else ""
            raise ImageReadError(f"{path}: cannot read {what}TIFF ({exc})") from exc
    return np.moveaxis(data, 0, -1)  # (H, W, bands)


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
        arr = _read_tiff(base, frame)
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


def read_mask(path: str | os.PathLike, threshold: float = 0, instances: bool = False) -> np.ndarray:
    """Read a mask as (H, W): binary uint8 {0, 1} (pixel > threshold), or int32 instance labels if `instances`.

    Any nonzero value is foreground by default; use threshold=127 for anti-aliased 8-bit masks.
    """
    arr = read_raw(path)
    if arr.shape[-1] > 1:
        first = arr[..., 0]
        if not all(np.array_equal(first, arr[..., k]) for k in range(1, min(arr.shape[-1], 3))):
            raise ImageReadError(f"{path}: mask has {arr.shape[-1]} differing colour bands; expected a grey or label image")
        arr = arr[..., :1]
    arr = arr[..., 0]
    if instances:
        return arr.astype(np.int32)
    return (arr > threshold).astype(np.uint8)


def image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(H, W, bands) of an image file, from its header where possible."""
    base, frame = split_frame(str(path))
    if Path(base).suffix.lower() in TIFF_EXT and Path(base).is_file():
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        target = base if frame is None else f"GTIFF_DIR:{frame + 1}:{base}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                with rasterio.open(target) as src:
                    return src.height, src.width, src.count
            except Exception as exc:
                raise ImageReadError(f"{path}: cannot read TIFF header ({exc})") from exc
    arr = read_raw(path)
    return arr.shape[0], arr.shape[1], arr.shape[2]


def open_manifest(path: str | os.PathLike) -> list[Sample]:
    """Load a manifest (see `manifest.load_manifest`) and check every image/mask pair has the same H×W."""
    samples = load_manifest(path)
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


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return tmp


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write a uint8/uint16 (H, W) or (H, W, 3 RGB) array as PNG (temp file + rename)."""
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write a (H, W) or (H, W, C) array as a (multi-band) TIFF with rasterio."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[..., None]
    tmp = _atomic_target(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", driver="GTiff", height=arr.shape[0], width=arr.shape[1],
                               count=arr.shape[2], dtype=arr.dtype.name) as dst:
                dst.write(np.moveaxis(arr, -1, 0))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
