"""The one way to write a file atomically: write to a hidden temp file in the target's folder, then rename.

Readers never see a partial file, a crash leaves the previous version intact, and the temp name keeps the target's
suffix so writers that pick a format by extension (Keras `.keras`, matplotlib `.png`, rasterio `.tif`) still work.
Every writer in the package goes through `atomic_path`; `grep -rn os.replace cellseg_tf` finds this file only.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on normal exit it replaces `path`, on an exception it is removed.

    with atomic_path("run/model.keras") as tmp:
        model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8, newlines as given) to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def zip_folder(folder: str | os.PathLike, archive: str | os.PathLike | None = None) -> Path:
    """Zip everything under `folder` into `archive` (default: `<folder>.zip` beside it), atomically; returns its path.

    Paths inside the zip are relative to `folder`; hidden temp files of unfinished atomic writes are left out. For
    handing a run's outputs over in one piece (the notebooks' download cell).
    """
    import zipfile

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to zip")
    archive = Path(archive) if archive is not None else folder.with_name(folder.name + ".zip")
    if archive.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{archive}: the zip must lie outside {folder}, the folder it packs")
    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not (path.name.startswith(".") and ".tmp" in path.name):
                zf.write(path, path.relative_to(folder).as_posix())
    return archive
