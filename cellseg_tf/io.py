"""File I/O: read images and masks (TIFF via rasterio, PNG/JPG via OpenCV), write outputs atomically.

Readers return native dtypes (uint8/uint16/float32) so 16-bit range is kept until normalisation. Multi-page TIFF
stacks are read one page at a time (`stack.tif#k`; a stack read without `#k` is an error, never its first page).
Channels are explicit (`channels=1|3`); masks are binary, thresholded, or instance labels. Every error names the
file and the problem. Inputs are never modified.
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


def _tiff_pages(path: str) -> int:
    """Number of pages (IFDs, overviews excluded) of a TIFF: GDAL lists >1 pages as GTIFF_DIR subdatasets."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                subs = [d for d in src.subdatasets if d.startswith("GTIFF_DIR:")]
        except Exception as exc:
            raise ImageReadError(f"{path}: cannot read TIFF ({exc})") from exc
    return max(1, len(subs))


def tiff_target(path: str, frame: int | None) -> str:
    """The rasterio name of `path` (frame None: must be single-page) or of page `frame` (0-based)."""
    pages = _tiff_pages(path)
    if frame is None:
        if pages > 1:
            raise ImageReadError(f"{path}: multi-page TIFF with {pages} pages; address one page as "
                                 f"'{Path(path).name}#k' (k = 0..{pages - 1}) or split the stack into a manifest "
                                 "with cellseg_tf.stacks.stack_manifest")
        return path
    if not 0 <= frame < pages:
        raise ImageReadError(f"{path}: frame {frame} requested but the file has {pages} page(s) (0..{pages - 1})")
    return f"GTIFF_DIR:{frame + 1}:{path}" if pages > 1 else path


def _read_tiff(path: str, frame: int | None) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    target = tiff_target(path, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(target) as src:
                data = src.read()  # (bands, H, W)
        except Exception as exc:
            what = f"frame {frame} of " if frame is not None else ""
            raise ImageReadError(f"{path}: cannot read {what}TIFF ({exc})") from exc
    return np.moveaxis(data, 0, -1)  # (H, W, bands)


def page_count(path: str | os.PathLike) -> int:
    """Pages of a multi-page TIFF stack (1 for single-page TIFF and for PNG/JPG)."""
    base, _ = split_frame(str(path))
    if not Path(base).is_file():
        raise ImageReadError(f"{base}: file not found")
    if Path(base).suffix.lower() in TIFF_EXT:
        return _tiff_pages(base)
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
    kept as they are (0 = background) for instance metrics; non-integer or negative labels are an error.
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
            raise ImageReadError(f"{path}: instance mask has non-integer values; "
                                 "expected integer labels (0 = background)")
        if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
            raise ImageReadError(f"{path}: instance labels must be in [0, 2^31); got {arr.min()}..{arr.max()}")
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
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        target = tiff_target(base, frame)
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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file in the same folder and a rename: never a partial file."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
