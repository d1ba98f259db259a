"""Cells from predicted maps: the one home of object labelling in the package.

Labelling (`labels_from_maps`): a model's maps (channel 0 = foreground probability; channel 1 = cell-boundary
probability for "contour" targets or normalised distance to the cell border for "distance" targets) become an
(H, W) int32 label image: connected components (binary), or a seeded watershed (scikit-image) from cell cores
(contour, distance); holes filled, small objects dropped, ids renumbered. `InstanceParams` (`instance_params`)
holds the knobs, saved as RUN/instances.yaml by the validation grid search (`tuning`). Scoring: `matching`.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..data.targets import TARGETS
from .instance_params import InstanceParams


def label_components(mask: np.ndarray, connectivity: int = 2) -> np.ndarray:
    """Connected components of a binary mask: (H, W) any dtype (nonzero = foreground) -> (H, W) int32 labels 1..n.

    connectivity=2 (default, as skimage.measure.label) joins 8-neighbours; 1 joins 4-neighbours only, which also
    splits off every diagonal one-pixel strand (on the Usiigaci masks: 60 components for 48 cells, against 49 with
    8-connectivity). Touching cells in a *binary* mask are one component: that merge is what instance scores expose.
    """
    from scipy import ndimage

    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbour) or 2 (8-neighbour), got {connectivity}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, _ = ndimage.label(np.asarray(mask) != 0, structure=structure)
    return labels.astype(np.int32)


def is_label_image(arr: np.ndarray) -> bool:
    """True when a mask holds more than one distinct nonzero value (it names objects, not just foreground)."""
    return np.unique(np.asarray(arr)[np.asarray(arr) != 0]).size > 1


def mask_labels(mask: np.ndarray, connectivity: int = 2) -> tuple[np.ndarray, str]:
    """A mask read with instances=True -> ((H, W) int32 labels, "labels" | "components"): its own ids when it
    names objects (`is_label_image`), else its connected components."""
    mask = np.asarray(mask)
    if is_label_image(mask):
        return mask.astype(np.int32), "labels"
    return label_components(mask, connectivity), "components"


# ------------------------------------------------------------------------------------------- maps -> labels
WATERSHED_WHOLE_PX = 1 << 24   # larger images are flooded component by component (same labels, bounded memory)


def _scaled(maps: np.ndarray, threshold: float) -> float:
    """A [0, 1] threshold in the units of `maps`: float maps are probabilities, uint8 maps are probability × 255."""
    return threshold * 255.0 if maps.dtype == np.uint8 else threshold


def _foreground(maps: np.ndarray, params: InstanceParams) -> np.ndarray:
    from scipy import ndimage

    fg = maps[..., 0] > _scaled(maps, params.fg_threshold)
    return ndimage.binary_fill_holes(fg) if params.fill_holes else fg


def _watershed(surface: np.ndarray, markers: np.ndarray, fg: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Seeded watershed of `surface` from `markers` inside `fg` -> (H, W) int32.

    Foreground components never interact (flooding stays inside the mask), so large images are flooded one
    component at a time in its bounding box: the same labels without skimage's float64 copies of the whole image.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    if surface.size <= WATERSHED_WHOLE_PX:
        return watershed(surface, markers, mask=fg).astype(np.int32)
    out = np.zeros(surface.shape, np.int32)
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == i
        flooded = watershed(surface[box], markers[box] * inside, mask=inside)
        out[box][inside] = flooded[inside]
    return out


def _split(fg: np.ndarray, seeds: np.ndarray, surface: np.ndarray, connectivity: int) -> np.ndarray:
    """Flood `surface` from the connected components of `seeds` within `fg`; a foreground component without any
    seed stays one object (a small or faint cell is kept, not lost)."""
    components = label_components(fg, connectivity)
    markers = label_components(seeds & fg, connectivity)
    n_seeds = int(markers.max())
    seeded = np.bincount(components[markers > 0], minlength=int(components.max()) + 1) > 0
    lone = np.zeros(len(seeded), np.int32)
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    lone[unseeded] = n_seeds + np.arange(1, len(unseeded) + 1, dtype=np.int32)
    markers = np.where(markers > 0, markers, lone[components])
    return _watershed(surface, markers, fg, components)


def _label_binary(maps: np.ndarray, params: InstanceParams, peaks: np.ndarray | None = None) -> np.ndarray:
    return label_components(_foreground(maps, params), params.connectivity)


def core_score(maps: np.ndarray, kind: str) -> np.ndarray | None:
    """(H, W) float32 in [0, 1], high inside a cell and low on a border between cells; None for binary maps."""
    if kind == "binary":
        return None
    ch1 = maps[..., 1].astype(np.float32) / (255.0 if maps.dtype == np.uint8 else 1.0)
    return 1.0 - ch1 if kind == "contour" else ch1


def _neighbour_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every 4-adjacent pixel pair of two different cells: (id_a, id_b, flat index a, flat index b), 1-D arrays."""
    flat = np.arange(labels.size, dtype=np.int64).reshape(labels.shape)
    out = [[], [], [], []]
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        la, lb = labels[a], labels[b]
        m = (la != lb) & (la > 0) & (lb > 0)
        for lst, v in zip(out, (la[m], lb[m], flat[a][m], flat[b][m])):
            lst.append(v)
    return tuple(np.concatenate(v) for v in out)


def merge_weak_borders(labels: np.ndarray, core: np.ndarray, threshold: float) -> np.ndarray:
    """Merge touching cells whose shared border has mean `core` score > threshold (no real border between them):
    (H, W) int labels, (H, W) float core score -> (H, W) int32 labels (merged groups take one id; not renumbered).
    Groups merge transitively (A~B and B~C make one cell)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels, np.int32)
    if threshold >= 1.0 or labels.max(initial=0) < 2:
        return labels
    ia, ib, pa, pb = _neighbour_pairs(labels)
    if not ia.size:
        return labels
    n = int(labels.max()) + 1
    lo, hi = np.minimum(ia, ib).astype(np.int64), np.maximum(ia, ib).astype(np.int64)
    pairs, inverse = np.unique(lo * n + hi, return_inverse=True)
    score = core.ravel()
    mean = np.bincount(inverse, weights=(score[pa] + score[pb]) / 2) / np.bincount(inverse)
    weak = pairs[mean > threshold]
    if not weak.size:
        return labels
    graph = coo_matrix((np.ones(weak.size), (weak // n, weak % n)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    lut = (group + 1).astype(np.int32)
    lut[0] = 0
    return lut[labels]


def absorb_fragments(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Cells under `fraction` × the median cell area of this image join the touching cell they share the longest
    border with (a non-fragment), or are dropped when they touch none: (H, W) int labels -> (H, W) int32."""
    labels = np.asarray(labels, np.int32)
    if fraction <= 0 or labels.max(initial=0) < 1:
        return labels
    sizes = np.bincount(labels.ravel())
    present = np.flatnonzero(sizes[1:]) + 1
    small = np.zeros(sizes.size, bool)
    small[present] = sizes[present] < fraction * np.median(sizes[present])
    if not small.any():
        return labels
    lut = np.arange(sizes.size, dtype=np.int32)
    ia, ib, _, _ = _neighbour_pairs(labels)
    src = np.concatenate([ia, ib]).astype(np.int64)
    dst = np.concatenate([ib, ia]).astype(np.int64)
    keep = small[src] & ~small[dst]
    if keep.any():
        n = sizes.size
        pairs, counts = np.unique(src[keep] * n + dst[keep], return_counts=True)
        order = np.lexsort((-counts, pairs // n))          # per fragment, longest shared border first
        first = pairs[order]
        first = first[np.r_[True, (first[1:] // n) != (first[:-1] // n)]]
        lut[first // n] = (first % n).astype(np.int32)
    lut[small & (lut == np.arange(sizes.size))] = 0
    return lut[labels]


def core_peaks(core: np.ndarray, h: float) -> np.ndarray:
    """(H, W) bool: the h-maxima of a core score (`core_score`, float in [0, 1]): regional peaks at least `h` above
    the saddle to any higher peak (skimage.morphology.h_maxima). Computed on the score rounded to 1/1024 so that
    float noise makes no plateau into many peaks."""
    from skimage.morphology import h_maxima

    levels = np.round(np.asarray(core, np.float32) * 1024.0).astype(np.int32)
    return h_maxima(levels, max(1, int(round(h * 1024.0)))).astype(bool)


def _seeds(maps: np.ndarray, kind: str, params: InstanceParams, core_mask: np.ndarray,
           peaks: np.ndarray | None) -> np.ndarray:
    """Seed pixels: the thresholded core (`core_mask`), restricted to h-maxima when params.seed_h > 0. `peaks`:
    precomputed `core_peaks(core_score(maps, kind), params.seed_h)` (tuning reuses them across thresholds)."""
    if params.seed_h <= 0:
        return core_mask
    if peaks is None:
        peaks = core_peaks(core_score(maps, kind), params.seed_h)
    return core_mask & peaks


def _label_contour(maps: np.ndarray, params: InstanceParams, peaks: np.ndarray | None = None) -> np.ndarray:
    fg = _foreground(maps, params)
    boundary = maps[..., 1]
    seeds = _seeds(maps, "contour", params, boundary < _scaled(maps, params.seed_threshold), peaks)
    return _split(fg, seeds, boundary, params.connectivity)


def _label_distance(maps: np.ndarray, params: InstanceParams, peaks: np.ndarray | None = None) -> np.ndarray:
    fg = _foreground(maps, params)
    dist = maps[..., 1]
    surface = (255 - dist) if dist.dtype == np.uint8 else -dist
    seeds = _seeds(maps, "distance", params, dist > _scaled(maps, params.seed_threshold), peaks)
    return _split(fg, seeds, surface, params.connectivity)


#: target kind (`data.targets.TARGETS`) -> labeller((H, W, C) maps, params, peaks=None) -> (H, W) int32, before
#: size filtering (peaks: see `_seeds`).
LABELLERS = {"binary": _label_binary, "contour": _label_contour, "distance": _label_distance}


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects smaller than `min_size` px and renumber the rest 1..n in the order of their old ids:
    (H, W) non-negative int labels -> (H, W) int32. One lookup table does skimage's remove_small_objects and
    relabel_sequential in a single pass over the image."""
    labels = np.asarray(labels)
    sizes = np.bincount(labels.ravel(), minlength=1)
    keep = sizes >= max(1, min_size)
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def labels_from_maps(maps: np.ndarray, kind: str = "binary", params: InstanceParams | None = None) -> np.ndarray:
    """Predicted maps -> instance labels: (H, W, C) float32 in [0, 1] (or uint8 = value × 255; (H, W) for binary)
    -> (H, W) int32, 0 = background, cells 1..n.

    binary:   connected components of ch0 > fg_threshold;
    contour:  seeds = components of foreground with ch1 (boundary) < seed_threshold, watershed on ch1;
    distance: seeds = components of ch1 (distance to the cell border) > seed_threshold, watershed on -ch1;
    with seed_h > 0 seeds are only the h-maxima of the core score inside those regions (`core_peaks`).
    Holes in the foreground are filled first (`fill_holes`); then cells split without a real border between them
    are merged (`merge_threshold`), fragments join their neighbour (`small_fraction`), objects under `min_size` px
    are dropped and ids renumbered.
    """
    params = params or InstanceParams()
    if kind not in LABELLERS:
        raise ValueError(f"unknown target kind {kind!r}; known: {', '.join(LABELLERS)}")
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[..., None]
    if maps.ndim != 3 or maps.shape[-1] < TARGETS[kind]:
        raise ValueError(f"{kind} maps need shape (H, W, >={TARGETS[kind]}), got {maps.shape}")
    return drop_small(refine(LABELLERS[kind](maps, params), maps, kind, params), params.min_size)


def refine(labels: np.ndarray, maps: np.ndarray, kind: str, params: InstanceParams) -> np.ndarray:
    """The steps after flooding, before `drop_small`: merge weak borders, then absorb fragments. (H, W) int32."""
    return next(refinements(labels, maps, kind, (params.merge_threshold,), (params.small_fraction,)))[2]


def refinements(labels: np.ndarray, maps: np.ndarray, kind: str, merge_thresholds: Sequence[float],
                small_fractions: Sequence[float]) -> Iterator[tuple[float, float, np.ndarray]]:
    """Yield (merge_threshold, small_fraction, `refine`d (H, W) int32 labels) for every pair, merges outermost: the
    merge for one threshold is computed once and shared by its fractions (what tuning needs). A step that changes
    nothing returns its input array itself, so equal results are often the same object."""
    core = core_score(maps, kind)
    labels = np.asarray(labels, np.int32)
    for merge in merge_thresholds:
        merged = labels if core is None else merge_weak_borders(labels, core, merge)
        for fraction in small_fractions:
            yield merge, fraction, absorb_fragments(merged, fraction)


def label_image_dtype(n_labels: int) -> np.dtype:
    """uint16 while the ids fit (<= 65535 cells), else uint32: the dtype of a saved label TIFF."""
    return np.dtype(np.uint16 if n_labels <= np.iinfo(np.uint16).max else np.uint32)


def as_label_image(labels: np.ndarray) -> np.ndarray:
    """(H, W) int labels -> uint16/uint32 copy for writing (see `label_image_dtype`)."""
    labels = np.asarray(labels)
    return labels.astype(label_image_dtype(int(labels.max(initial=0))))
