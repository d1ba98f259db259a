"""A small, realistic synthetic fluorescence-nuclei dataset for the demo and tests (written as 16-bit TIFFs).

Nuclei: ellipses of varied size, eccentricity and orientation, some touching, with internal chromatin texture;
uneven illumination, optical blur, Poisson (shot) + Gaussian (read) noise on a camera offset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .io import write_png, write_tiff
from .manifest import write_manifest


def nuclei_image(shape: tuple[int, int] = (256, 256), n_nuclei: int | None = None, radius: tuple[float, float] = (6, 15),
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its instance labels.

    Returns (image (H, W) uint16, labels (H, W) int32 with 0 = background, k = nucleus k).
    """
    rng = rng or np.random.default_rng()
    h, w = shape
    n = n_nuclei if n_nuclei is not None else int(rng.integers(12, 30) * h * w / 256 ** 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    centres: list[tuple[float, float]] = []
    for k in range(1, n + 1):
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.55, 1.0)  # eccentricity
        theta = rng.uniform(0, np.pi)
        if centres and rng.random() < 0.3:  # a touching neighbour
            cy, cx = centres[int(rng.integers(len(centres)))]
            ang = rng.uniform(0, 2 * np.pi)
            cy, cx = cy + np.sin(ang) * 1.9 * a, cx + np.cos(ang) * 1.9 * a
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        r2 = (u / a) ** 2 + (v / b) ** 2
        inside = (r2 <= 1.0) & (labels == 0)
        if inside.sum() < 10:
            continue
        labels[inside] = k
        brightness = rng.uniform(0.35, 1.0)
        signal[inside] = brightness * (1.0 - 0.25 * r2[inside])  # dimmer towards the rim
        centres.append((cy, cx))
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.5)
    signal *= 1.0 + 0.35 * texture / (np.abs(texture).max() + 1e-6)
    gy, gx = rng.uniform(-0.4, 0.4, size=2)
    illumination = 1.0 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5)
    blurred = ndi.gaussian_filter(signal * illumination, rng.uniform(0.8, 1.8))
    background = 0.06 + 0.04 * ndi.gaussian_filter(rng.random(shape).astype(np.float32), 20) * 10
    photons = rng.poisson(np.clip(blurred + background, 0, None) * rng.uniform(150, 400)).astype(np.float32)
    counts = 100.0 + photons * 40.0 + rng.normal(0, 60.0, shape)
    return np.clip(counts, 0, 65535).astype(np.uint16), labels


def make_dataset(out_dir: str | Path, n_images: int = 16, shape: tuple[int, int] = (256, 256),
                 splits: tuple[int, int, int] | None = None, seed: int = 0, instance_masks: bool = False) -> Path:
    """Write images/*.tif (uint16), masks/*.png and manifest.csv into `out_dir`; returns the manifest.

    splits: (n_train, n_val, n_test); default about 62% / 13% / 25%.
    instance_masks: masks are uint16 instance labels (0 = background, k = nucleus k) instead of uint8 0/255.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    if splits is None:
        n_test = max(1, n_images // 4)
        n_val = max(1, n_images // 8)
        splits = (n_images - n_val - n_test, n_val, n_test)
    if sum(splits) != n_images or min(splits) < 0 or splits[0] < 1:
        raise ValueError(f"splits {splits} must be non-negative, with >= 1 train image, summing to {n_images}")
    names = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    rows = []
    for i, split in enumerate(names):
        image, labels = nuclei_image(shape, rng=rng)
        img_path = write_tiff(out / "images" / f"nuclei_{i:03d}.tif", image)
        mask = labels.astype(np.uint16) if instance_masks else np.where(labels > 0, 255, 0).astype(np.uint8)
        mask_path = write_png(out / "masks" / f"nuclei_{i:03d}.png", mask)
        rows.append({"image": str(img_path), "mask": str(mask_path), "split": split,
                     "dataset": "synthetic_nuclei", "modality": "fluorescence"})
    return write_manifest(out / "manifest.csv", rows)
