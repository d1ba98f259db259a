"""A folder of images and a folder of their masks, paired by file name -> a manifest with seeded splits.

For users whose data is "images/ + masks/" rather than a CSV: `cellseg-tf manifest --images DIR --masks DIR`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import IMAGE_EXT
from .manifest import ManifestError, write_manifest

MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg", "_gt", "_annotation")


@dataclass
class FolderPairing:
    """Result of `pair_folders`: (image, mask) path pairs and the files that found no partner."""

    pairs: list[tuple[str, str]]
    unmatched_images: list[str]
    unmatched_masks: list[str]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ManifestError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXT)


def _mask_key(stem: str, suffixes: tuple[str, ...]) -> tuple[str, bool]:
    """(image stem the mask belongs to, whether a mask suffix was stripped); case-insensitive."""
    low = stem.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if suffix and low.endswith(suffix.lower()) and len(low) > len(suffix):
            return low[: -len(suffix)], True
    return low, False


def pair_folders(images: str | os.PathLike, masks: str | os.PathLike | None = None,
                 suffixes: tuple[str, ...] = MASK_SUFFIXES, verbose: int = 1) -> FolderPairing:
    """Pair the image files of a folder with their masks by name (case-insensitive).

    A mask belongs to image `<stem>.<ext>` when its stem is `<stem>` or `<stem><suffix>` (`nuc_01.tif` ↔
    `nuc_01.png` or `nuc_01_mask.png`). With masks=None (or the same folder) masks sit beside the images and must
    carry a suffix. Two masks for one image, or one mask for two images, is a ManifestError naming the files.
    verbose=0 hides the progress bar (one step per image file).
    """
    from tqdm.auto import tqdm

    image_dir = Path(images)
    mask_dir = Path(masks) if masks is not None else image_dir
    same = mask_dir.resolve() == image_dir.resolve()
    image_files = _image_files(image_dir)
    mask_files = _image_files(mask_dir) if not same else []
    if same:
        mask_files = [p for p in image_files if _mask_key(p.stem, suffixes)[1]]
        image_files = [p for p in image_files if p not in mask_files]
    by_key: dict[str, list[Path]] = {}
    for m in mask_files:
        by_key.setdefault(_mask_key(m.stem, suffixes)[0], []).append(m)
    pairs, unmatched_images, used = [], [], {}
    for img in tqdm(image_files, desc="pair", unit="img", disable=not verbose):
        found = by_key.get(img.stem.lower(), [])
        if len(found) > 1:
            raise ManifestError(f"{img}: several masks match it ({', '.join(p.name for p in found)}); keep one")
        if not found:
            unmatched_images.append(str(img))
            continue
        if found[0] in used:
            raise ManifestError(f"{found[0]}: mask matches two images, {used[found[0]].name} and {img.name}; "
                                "rename one")
        used[found[0]] = img
        pairs.append((str(img), str(found[0])))
    unmatched_masks = [str(m) for m in mask_files if m not in used]
    return FolderPairing(pairs, unmatched_images, unmatched_masks)


def assign_splits(n: int, val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0) -> list[str]:
    """Seeded split labels for n items: round(n·test) test, round(n·val) val, the rest (at least one) train."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ManifestError(f"val and test fractions must be in [0, 1), got {val_fraction} and {test_fraction}")
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ManifestError(f"{n} pair(s) leave no training image with val {val_fraction} and test {test_fraction}")
    labels = np.array(["train"] * n, dtype=object)
    order = np.random.default_rng(seed).permutation(n)
    labels[order[:n_test]] = "test"
    labels[order[n_test:n_test + n_val]] = "val"
    return [str(x) for x in labels]


def folder_manifest(out_manifest: str | os.PathLike, images: str | os.PathLike,
                    masks: str | os.PathLike | None = None, val_fraction: float = 0.0, test_fraction: float = 0.0,
                    seed: int = 0, dataset: str = "", modality: str = "", unlabelled_as_test: bool = False,
                    suffixes: tuple[str, ...] = MASK_SUFFIXES, verbose: int = 1) -> tuple[Path, FolderPairing]:
    """Write a manifest for a folder of images and their masks (see `pair_folders`), with seeded splits.

    val_fraction 0 leaves validation to training (a seeded 20 % of train). unlabelled_as_test adds images without a
    mask as mask-less test rows (prediction only). Returns the manifest path and the pairing, unmatched files included.
    verbose=0 hides the progress bar.
    """
    pairing = pair_folders(images, masks, suffixes, verbose)
    if not pairing.pairs:
        raise ManifestError(f"{images}: no image/mask pairs found (masks in {masks or images}; mask names are the "
                            f"image stem or the stem + one of {', '.join(suffixes)})")
    splits = assign_splits(len(pairing.pairs), val_fraction, test_fraction, seed)
    extra = {k: v for k, v in (("dataset", dataset), ("modality", modality)) if v}
    rows = [{"image": i, "mask": m, "split": s, **extra} for (i, m), s in zip(pairing.pairs, splits)]
    if unlabelled_as_test:
        rows += [{"image": i, "mask": "", "split": "test", **extra} for i in pairing.unmatched_images]
    return write_manifest(out_manifest, rows), pairing
