"""Multi-page TIFF stacks (e.g. `Stacked_train.tif` + `Stacked_train_Mask.tif`, one frame per page) -> a manifest.

Two ways: address frames in place (`image=Stacked_train.tif#3`, nothing copied; `io` reads page 3), or extract every
frame to its own TIFF (`extract_to=`), for tools that do not understand `#k`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .io import ImageReadError, image_shape, page_count, read_raw, write_tiff
from .manifest import SPLITS, write_manifest


def find_stacks(folder: str | os.PathLike, pattern: str = "Stacked_*.tif*",
                mask_suffix: str = "_Mask") -> list[tuple[str, str]]:
    """(image stack, mask stack) pairs in `folder`: every file matching `pattern` whose stem does not end with
    `mask_suffix`, paired with `<stem><mask_suffix><ext>`. A stack without its mask is an error naming it."""
    folder = Path(folder)
    pairs = []
    for p in sorted(folder.glob(pattern)):
        if p.stem.endswith(mask_suffix):
            continue
        mask = p.with_name(f"{p.stem}{mask_suffix}{p.suffix}")
        if not mask.is_file():
            raise ImageReadError(f"{p}: no mask stack {mask.name} beside it")
        pairs.append((str(p), str(mask)))
    return pairs


def stack_rows(image_stack: str | os.PathLike, mask_stack: str | os.PathLike | None, split: str = "train",
               dataset: str = "", modality: str = "", extract_to: str | os.PathLike | None = None) -> list[dict]:
    """Manifest rows (dicts) for every frame of a stack pair; frame counts and frame sizes must match.

    extract_to: folder to write frame k as images/<stem>_fK.tif and masks/<stem>_fK.tif (atomic writes) and point the
    rows at those files; None addresses the frames in place as `stack.tif#k`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    image_stack = str(Path(image_stack).resolve())
    n = page_count(image_stack)
    if mask_stack is not None:
        mask_stack = str(Path(mask_stack).resolve())
        m = page_count(mask_stack)
        if m != n:
            raise ImageReadError(f"{mask_stack}: mask stack has {m} frame(s) but image stack {image_stack} has {n}")
        ish, msh = image_shape(f"{image_stack}#0"), image_shape(f"{mask_stack}#0")
        if ish[:2] != msh[:2]:
            raise ImageReadError(f"{mask_stack}: frames are {msh[0]}×{msh[1]} but {image_stack} frames are "
                                 f"{ish[0]}×{ish[1]}")
    rows = []
    stem = Path(image_stack).stem
    for k in range(n):
        image, mask = f"{image_stack}#{k}", (f"{mask_stack}#{k}" if mask_stack is not None else "")
        if extract_to is not None:
            out = Path(extract_to)
            image = str(write_tiff(out / "images" / f"{stem}_f{k}.tif", read_raw(image)))
            if mask:
                mask = str(write_tiff(out / "masks" / f"{stem}_f{k}.tif", read_raw(mask)))
        row = {"image": image, "mask": mask, "split": split}
        if dataset:
            row["dataset"] = dataset
        if modality:
            row["modality"] = modality
        rows.append(row)
    return rows


def stack_manifest(out_manifest: str | os.PathLike, stacks: list[tuple[str, str | None]], split: str = "train",
                   dataset: str = "", modality: str = "", extract_to: str | os.PathLike | None = None) -> Path:
    """Write a manifest CSV with one row per frame of each (image stack, mask stack); returns its path."""
    rows: list[dict] = []
    for image, mask in stacks:
        rows += stack_rows(image, mask, split, dataset, modality, extract_to)
    if not rows:
        raise ValueError("no stacks given")
    return write_manifest(out_manifest, rows)
