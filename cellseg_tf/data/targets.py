"""Training targets derived from instance-label patches: what the model learns to predict, per pixel.

A target kind names the channels the model outputs (channel 0 is always foreground probability, so pixel Dice,
binarisation and ensemble votes read channel 0 whatever the kind):

| kind     | channels | ch0        | ch1                                                                        |
|----------|----------|------------|----------------------------------------------------------------------------|
| binary   | 1        | foreground | —                                                                          |
| contour  | 2        | foreground | cell-boundary band: cell pixels 4-adjacent to background or another cell   |
| distance | 2        | foreground | each cell's Euclidean distance to its own boundary / that cell's maximum   |

Contour bands are 1 px wide against background and 2 px between touching cells (one px of each), so touching
cells are always separated. Distance maps peak at exactly 1.0 inside every cell, so each cell has its own maximum
(a watershed seed) whatever its size, and are 0 on background.

Targets are derived from the label patch AFTER augmentation (labels warped with nearest-neighbour interpolation),
never before: a derived map warped bilinearly is no longer a distance map, and a warped 1-px band breaks up.
The patch border is not a cell border: a cell cut by the patch edge keeps distances measured to its visible
boundary only, as the same cell does in a larger tile at prediction time.

Also here: deciding whether masks carry instance ids (`resolve_target`) and giving each disconnected part of a
shared id its own id (`split_shared_ids`). Pure numpy/scipy/OpenCV: labels in, arrays out, no I/O.
labels: (H, W) integer array, 0 = background, any positive ids (need not be sequential).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

TargetFn = Callable[[np.ndarray], np.ndarray]
TARGETS: dict[str, int] = {}            # kind -> output channels
_DERIVE: dict[str, TargetFn] = {}
TARGET_CHOICES = ("auto", "binary", "contour", "distance")
DEFAULT_INSTANCE_TARGET = "distance"    # what "auto" picks when the masks carry instance ids
MIN_INSTANCE_IDS = 3                     # masks "carry ids" when some mask has more than 2 distinct non-zero ids
MIN_INTERIOR_SHARE = 0.3                 # ... that are solid blobs (see `is_instance_mask`)
MAX_DIRECT_ID = 4096                     # larger ids are renumbered per patch before the per-cell loop


def register_target(name: str, channels: int):
    """Decorator adding `derive(labels (H, W) int) -> (H, W, channels) float32` to the registry under `name`."""
    def deco(fn: TargetFn) -> TargetFn:
        TARGETS[name] = int(channels)
        _DERIVE[name] = fn
        return fn
    return deco


def check_target(kind: str, allow_auto: bool = False) -> str:
    """`kind` if it names a target (or "auto" when allowed), else a ValueError listing the choices."""
    choices = (("auto",) if allow_auto else ()) + tuple(sorted(TARGETS))
    if kind not in choices:
        raise ValueError(f"unknown target {kind!r}; use one of {', '.join(choices)}")
    return kind


def target_channels(kind: str) -> int:
    """Channels a model predicting target `kind` outputs (1 for binary, 2 for contour and distance)."""
    return TARGETS[check_target(kind)]


def derive_target(labels: np.ndarray, kind: str) -> np.ndarray:
    """Label patch (H, W) int -> target (H, W, C) float32 of kind `kind` (see the module table)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    return _DERIVE[check_target(kind)](labels)


@register_target("binary", channels=1)
def binary_target(labels: np.ndarray) -> np.ndarray:
    """(H, W, 1) float32 {0, 1}: foreground."""
    return (np.asarray(labels) > 0).astype(np.float32)[..., None]


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: cell pixels with a 4-neighbour of another value (background or another cell).

    Equals `skimage.segmentation.find_boundaries(labels, mode="inner")` (4-connectivity; the patch edge is not a
    boundary) at a fraction of its cost: four shifted comparisons instead of a grey dilation and erosion.
    """
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    dy = lab[1:] != lab[:-1]
    dx = lab[:, 1:] != lab[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge & (lab > 0)


@register_target("contour", channels=2)
def contour_target(labels: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32: ch0 foreground, ch1 the inner boundary band of every cell (`inner_boundaries`)."""
    lab = np.asarray(labels)
    out = np.empty((*lab.shape, 2), np.float32)
    out[..., 0] = lab > 0
    out[..., 1] = inner_boundaries(lab)
    return out


@register_target("distance", channels=2)
def distance_target(labels: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32: ch0 foreground, ch1 per-cell distance to the cell's boundary divided by its maximum.

    For a pixel of cell i, ch1 = EDT(labels == i) / max over cell i, in (0, 1] with 1.0 at each cell's centre(s);
    0 on background. One exact Euclidean distance transform per cell on its bounding box grown by 1 px (OpenCV's
    DIST_MASK_PRECISE, snapped to exact square roots of integers: equal to scipy.ndimage.distance_transform_edt and
    ~3x faster on small boxes), so the cost grows with the number and size of cells, not with the patch area.
    """
    import cv2
    from scipy import ndimage

    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        lab = lab.astype(np.int64)
    out = np.zeros((*lab.shape, 2), np.float32)
    fg = lab > 0
    out[..., 0] = fg
    if not fg.any():
        return out
    if lab.max() > MAX_DIRECT_ID:  # find_objects lists every id up to the largest: renumber sparse large ids first
        values, lab = np.unique(lab, return_inverse=True)
        lab = lab.reshape(fg.shape) + int(values[0] != 0)
    dist = out[..., 1]
    h, w = lab.shape
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        ys, xs = box
        box = slice(max(ys.start - 1, 0), min(ys.stop + 1, h)), slice(max(xs.start - 1, 0), min(xs.stop + 1, w))
        cell = lab[box] == i
        if cell.all():  # the cell fills its whole box (it covers the patch): no visible boundary, a flat plateau
            dist[box][cell] = 1.0
            continue
        d = cv2.distanceTransform(cell.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[cell]
        # squared distances are integers: rounding them makes the result exact and bit-reproducible (OpenCV's float32
        # output varies in the last bit from call to call with the alignment of its internal buffers)
        d = np.sqrt(np.rint(np.square(d, dtype=np.float64)))
        dist[box][cell] = d / d.max()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Which target a set of masks supports, and masks whose ids are shared by separate objects


def count_ids(mask: np.ndarray) -> int:
    """Number of distinct non-zero values in a mask."""
    values = np.unique(np.asarray(mask))
    return int(np.count_nonzero(values))


def is_instance_mask(mask: np.ndarray) -> bool:
    """Whether a training mask should train an instance target: more than 2 distinct non-zero values, solid ones.

    Stricter than `predict.instances.is_label_image` (any two ids name objects, which is what scoring needs):
    choosing a training target must not mistake an anti-aliased binary mask for cells.

    Solid: of the foreground pixels outside the most common value, at least MIN_INTERIOR_SHARE have all four
    neighbours of their own value. In label images cells have interiors (measured: 64-92 % on the DSB 2018,
    Usiigaci and StarDist samples); the extra grey levels of an anti-aliased, blurred or JPEG-saved binary mask are
    thin rims along the edges (0-5 %), which would otherwise read as hundreds of 1-px "cells".
    Binary ({0, 1}, {0, 255}) and 3-class ({0, 1, 2}) masks are not label images.
    """
    lab = np.asarray(mask)
    values, counts = np.unique(lab[lab > 0], return_counts=True)
    if values.size < MIN_INSTANCE_IDS:
        return False
    other = (lab > 0) & (lab != values[np.argmax(counts)])
    solid = np.ones(lab.shape, bool)
    dy, dx = lab[1:] == lab[:-1], lab[:, 1:] == lab[:, :-1]
    solid[1:] &= dy
    solid[:-1] &= dy
    solid[:, 1:] &= dx
    solid[:, :-1] &= dx
    return bool((solid & other).sum() >= MIN_INTERIOR_SHARE * other.sum())


def carries_instance_ids(masks: Sequence[np.ndarray]) -> bool:
    """True when some mask is an instance-label image (`is_instance_mask`)."""
    return any(is_instance_mask(m) for m in masks)


def resolve_target(requested: str, masks: Sequence[np.ndarray]) -> tuple[str, str]:
    """The target to train with -> (kind, why) given the requested one and the raw training masks.

    "auto" -> DEFAULT_INSTANCE_TARGET when some mask is a label image (`is_instance_mask`), else "binary". An
    explicit instance target on masks without ids falls back to "binary"; `why` then says why (empty when nothing
    was overridden), for the caller to warn with.
    """
    check_target(requested, allow_auto=True)
    has_ids = carries_instance_ids(masks)
    if requested == "auto":
        return (DEFAULT_INSTANCE_TARGET if has_ids else "binary"), ""
    if requested == "binary" or has_ids:
        return requested, ""
    return "binary", (f"target {requested!r} needs instance-label masks (each cell its own id), but no training "
                      f"mask is one: none has more than {MIN_INSTANCE_IDS - 1} distinct non-zero values forming "
                      "solid objects (binary masks; grey levels only along edges are anti-aliasing: set "
                      "mask_threshold, e.g. 127)")


def split_shared_ids(labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Give every disconnected part (8-connectivity) of an id its own id -> (labels int32, report).

    An id covering two separate blobs is two cells to every instance target and metric, so its largest part keeps
    the id and every other part gets a new id after the current maximum. report: {"ids": [ids that had several
    parts], "extra_parts": n, "largest_extra_px": area of the largest part that got a new id}; labels are
    returned unchanged (same array) when no id is shared.
    """
    from skimage.measure import label as connected

    lab = np.asarray(labels)
    report = {"ids": [], "extra_parts": 0, "largest_extra_px": 0}
    parts = connected(lab, background=0, connectivity=2)
    n_parts = int(parts.max())
    if n_parts == count_ids(lab):
        return lab, report
    flat_parts, flat_lab = parts.ravel(), lab.ravel()
    owner = np.zeros(n_parts + 1, np.int64)
    owner[flat_parts] = flat_lab                      # every part lies inside one id
    size = np.bincount(flat_parts, minlength=n_parts + 1)
    order = np.lexsort((-size[1:], owner[1:])) + 1    # parts by id, largest first within an id
    first = np.ones(order.size, bool)
    first[1:] = owner[order[1:]] != owner[order[:-1]]
    extra = order[~first]
    new_id = owner.copy()
    new_id[extra] = int(lab.max()) + 1 + np.arange(extra.size)
    report = {"ids": sorted(int(i) for i in np.unique(owner[extra])), "extra_parts": int(extra.size),
              "largest_extra_px": int(size[extra].max())}
    return new_id[parts].astype(np.int32), report


__all__ = ["TARGETS", "TARGET_CHOICES", "DEFAULT_INSTANCE_TARGET", "register_target", "check_target",
           "target_channels", "derive_target", "binary_target", "contour_target", "distance_target",
           "inner_boundaries", "count_ids", "is_instance_mask", "carries_instance_ids", "resolve_target",
           "split_shared_ids"]
