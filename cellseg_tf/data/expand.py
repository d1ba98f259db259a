"""Offline expansion (Das et al. 2025 §3.3.2): write K augmented variants of every training pair to disk, plus a
manifest.

Das et al. 2025 expanded each pair into 21 variants with its two-stage policy before training. Here each variant is the
normalised image after one draw of a policy (default `brightfield_2stage`), saved as a 16-bit PNG (grey or RGB), and
its mask as a 0/255 PNG. Variant v of manifest row r is seeded by (seed, r, v), so a rerun rewrites the same files.
The original pairs are listed too (by their own paths) unless include_original=False. Train on the new manifest
with augmentation "none" or a light policy. Training normalises every image (percentiles, 1 / 99.8 by default) on
load, variants included, so a variant's global brightness/contrast change is largely normalised away, as it would be
for a real image of that contrast; noise, blur, CLAHE, inversion and geometric changes remain.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .augment import apply_policy, get_policy
from .dataset import load_pair
from .io import ImageReadError, write_png
from .manifest import _parse_manifest, select, write_manifest
from .preprocessing import NORM_HIGH, NORM_LOW


def expand_dataset(manifest: str | os.PathLike, out_dir: str | os.PathLike, variants: int = 21,
                   policy: str = "brightfield_2stage", seed: int = 0, channels: int = 1, split: str | None = "train",
                   include_original: bool = True, low: float = NORM_LOW, high: float = NORM_HIGH,
                   mask_threshold: float = 0, verbose: int = 1) -> tuple[Path, list[tuple[str, str]]]:
    """Expand the `split` rows of `manifest` into out_dir/{images,masks}/<stem>_augVV.png + out_dir/manifest.csv.

    Returns (manifest path, failures as (file, reason)). A bad pair is reported and skipped; if every pair fails
    an ImageReadError is raised. Inputs are never modified; outputs are written atomically. verbose=0 hides the
    progress bar (one step per source pair).
    """
    from tqdm.auto import tqdm

    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    out = Path(out_dir)
    # structural checks only: each pair's size is checked as it is read, so one bad pair is skipped, not the manifest
    samples = [s for s in select(_parse_manifest(manifest), split) if s.mask is not None]
    if not samples:
        raise ValueError(f"{manifest}: no labelled rows in split {split!r}")
    rows, failures = [], []
    bar = tqdm(samples, desc="expand", unit="pair", disable=not verbose)
    for s in bar:
        try:
            pair = load_pair(s, channels, low, high, mask_threshold)
        except (ImageReadError, ValueError) as exc:
            failures.append((s.image, str(exc)))
            bar.set_postfix(failed=len(failures), refresh=False)
            continue
        extra = {k: v for k, v in (("dataset", s.dataset), ("modality", s.modality)) if v}
        if include_original:
            rows.append({"image": s.image, "mask": s.mask, "split": "train", **extra})
        h, w = pair.mask.shape
        pipeline = get_policy(policy, min(h, w), pair.image.shape[-1])
        for v in range(variants):
            pipeline.set_random_seed(int(np.random.default_rng([seed, s.row, v]).integers(0, 2**31 - 1)))
            img, msk = apply_policy(pipeline, pair.image, pair.mask)
            img16 = np.round(img * 65535.0).astype(np.uint16)
            name = f"{s.stem}_aug{v:02d}.png"
            ip = write_png(out / "images" / name, img16[..., 0] if img16.shape[-1] == 1 else img16)
            mp = write_png(out / "masks" / name, (msk * 255).astype(np.uint8))
            rows.append({"image": str(ip), "mask": str(mp), "split": "train", **extra})
    if not rows:
        raise ImageReadError(f"{manifest}: every pair failed: " + "; ".join(f"{f}: {r}" for f, r in failures))
    return write_manifest(out / "manifest.csv", rows), failures
