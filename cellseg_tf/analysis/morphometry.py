"""Per-cell morphometry: one row per object of a predicted mask (area, shape, intensity), in pixels or microns.

Objects are the batch job's cells (`OUT/<stem>_instances.tif` when `predict --instances` wrote it, touching cells
split by the model's maps; else the mask's holes filled, 8-connected components, objects under `min_size` px
dropped). Shapes come
from `skimage.measure.regionprops`; intensities from the raw image (its own units, not normalised; RGB is averaged
over bands). Lengths are multiplied by `pixel_size`, areas by its square.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..predict.options import output_paths
from ..predict.instance_params import InstanceParams
from ..predict.instances import labels_from_maps
from ..data.io import ImageReadError, read_mask, read_raw, write_text_atomic
from ..common.visualize import plot_histograms

SHAPE_COLUMNS = ("label", "centroid_y", "centroid_x", "area", "perimeter", "equivalent_diameter", "major_axis",
                 "minor_axis", "eccentricity", "solidity", "circularity", "orientation_deg", "touches_border")
INTENSITY_COLUMNS = ("mean_intensity", "min_intensity", "max_intensity", "integrated_intensity")


def cell_table(labels: np.ndarray, image: np.ndarray | None = None, pixel_size: float = 1.0):
    """(H, W) integer labels (0 = background) [+ (H, W[, C]) raw image] -> DataFrame, one row per label.

    circularity = 4π·area / perimeter² (1 for a disc; the perimeter estimate makes tiny objects read slightly off).
    orientation_deg: angle of the major axis against the image rows, in (-90, 90]. touches_border: the object reaches
    the image edge (its size is then truncated; drop such rows for size statistics).
    """
    import pandas as pd
    from skimage.measure import regionprops

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be > 0, got {pixel_size}")
    grey = None
    if image is not None:
        grey = np.asarray(image, np.float64)
        grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
        if grey.shape != labels.shape:
            raise ValueError(f"image is {grey.shape[0]}×{grey.shape[1]} but labels are "
                             f"{labels.shape[0]}×{labels.shape[1]}")
    h, w = labels.shape
    rows = []
    for r in regionprops(labels.astype(np.int64), intensity_image=grey):
        y0, x0, y1, x1 = r.bbox
        area, perimeter = float(r.area), float(r.perimeter)
        row = {"label": int(r.label), "centroid_y": r.centroid[0] * pixel_size, "centroid_x": r.centroid[1] * pixel_size,
               "area": area * pixel_size ** 2, "perimeter": perimeter * pixel_size,
               "equivalent_diameter": float(r.equivalent_diameter_area) * pixel_size,
               "major_axis": float(r.axis_major_length) * pixel_size,
               "minor_axis": float(r.axis_minor_length) * pixel_size, "eccentricity": float(r.eccentricity),
               "solidity": float(r.solidity),
               "circularity": 4 * math.pi * area / perimeter ** 2 if perimeter > 0 else float("nan"),
               "orientation_deg": math.degrees(float(r.orientation)),
               "touches_border": bool(y0 == 0 or x0 == 0 or y1 == h or x1 == w)}
        if grey is not None:
            values = grey[r.slice][r.image]
            row.update(mean_intensity=float(values.mean()), min_intensity=float(values.min()),
                       max_intensity=float(values.max()), integrated_intensity=float(values.sum()))
        rows.append(row)
    columns = list(SHAPE_COLUMNS) + (list(INTENSITY_COLUMNS) if grey is not None else [])
    return pd.DataFrame(rows, columns=columns)


def prediction_labels(pred_dir: str | os.PathLike, image: str | os.PathLike, min_size: int = 16) -> np.ndarray:
    """The cells predicted for `image` in PRED_DIR as (H, W) int labels: `<stem>_instances.tif` if `predict
    --instances` wrote it (touching cells already split by the model's maps), else the components of `<stem>.png`
    (holes filled, objects under `min_size` px dropped: `instances.labels_from_maps` on the binary mask). File
    names: `predict.options.output_paths`."""
    paths = output_paths(pred_dir, image, instances=True)
    saved = paths["instances"]
    if saved.is_file():
        return read_mask(saved, instances=True)
    mask = paths["mask"]
    if not mask.is_file():
        raise FileNotFoundError(f"{mask}: no prediction (run `cellseg-tf predict` first)")
    return labels_from_maps(read_mask(mask) > 0, "binary", InstanceParams(min_size=min_size))


def measure_folder(pred_dir: str | os.PathLike, images: Sequence[str], out_csv: str | os.PathLike,
                   pixel_size: float = 1.0, min_size: int = 16, intensities: bool = True, verbose: int = 1):
    """Measure every cell of the predictions of `images` and write OUT_CSV (one row per cell, `image` first),
    `<name>_per_image.csv` (cells, median/mean area, area fraction per image) and `<name>_histograms.png` (area,
    circularity and, with intensities, mean intensity of the cells not touching the border), all atomically.

    A missing or unreadable prediction/image is reported in the returned failures ("path: problem") and the rest go
    on. Returns (cells DataFrame, per-image DataFrame, failures). verbose=0 hides the progress bar.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out_csv = Path(out_csv)
    tables, summaries, failures = [], [], []
    for image_path in tqdm(images, desc="measure", unit="img", disable=not verbose):
        try:
            labels = prediction_labels(pred_dir, image_path, min_size)
            raw = read_raw(image_path) if intensities else None
            table = cell_table(labels, raw, pixel_size)
        except (FileNotFoundError, ImageReadError, ValueError) as exc:
            failures.append(f"{image_path}: {exc}")
            continue
        tables.append(table.assign(image=str(image_path)))
        summaries.append({"image": str(image_path), "cells": len(table),
                          "cells_not_touching_border": int((~table["touches_border"]).sum()),
                          "median_area": float(table["area"].median()) if len(table) else float("nan"),
                          "mean_area": float(table["area"].mean()) if len(table) else float("nan"),
                          "area_fraction": float((labels > 0).mean())})
    if not tables:
        detail = f"; first failure: {failures[0]}" if failures else ""
        raise ValueError(f"no predictions could be measured ({len(failures)} failed{detail})")
    cells = pd.concat(tables, ignore_index=True)
    cells = cells[["image"] + [c for c in cells.columns if c != "image"]]
    per_image = pd.DataFrame(summaries)
    write_text_atomic(out_csv, cells.to_csv(index=False))
    write_text_atomic(out_csv.with_name(f"{out_csv.stem}_per_image.csv"), per_image.to_csv(index=False))
    inside = cells[~cells["touches_border"].astype(bool)]
    axis_names = {"area": "area (px²)" if pixel_size == 1 else "area (units²)", "circularity": "circularity",
                  "mean_intensity": "mean intensity (raw image units)"}
    plot_histograms({name: inside[c].to_numpy() for c, name in axis_names.items() if c in inside.columns},
                    out_csv.with_name(f"{out_csv.stem}_histograms.png"),
                    title=f"{len(inside)} cells not touching the image border, {len(per_image)} image(s)")
    return cells, per_image, failures
