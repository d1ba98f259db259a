"""Instance targets from label patches: values against independent references (scipy EDT, skimage boundaries),
touching cells separated, empty patches, target resolution and ids shared by disconnected objects."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import find_boundaries

from cellseg_tf.data.synthetic import nuclei_image
from cellseg_tf.data.targets import (TARGETS, carries_instance_ids, derive_target, is_instance_mask, resolve_target,
                                     split_shared_ids, target_channels)


def _labels(seed: int = 0, shape=(96, 96)) -> np.ndarray:
    """Synthetic nuclei labels (some touching), ids shuffled and spread above 255 so nothing assumes 1..N."""
    _, lab = nuclei_image(shape, rng=np.random.default_rng(seed))
    ids = np.unique(lab[lab > 0])
    new = np.random.default_rng(seed).permutation(len(ids)) * 37 + 300
    lut = np.zeros(lab.max() + 1, np.int64)
    lut[ids] = new
    return lut[lab].astype(np.int32)


def _touching_pair() -> np.ndarray:
    """Two 10×12 cells sharing a vertical edge, on a 24×40 patch."""
    lab = np.zeros((24, 40), np.int32)
    lab[6:16, 5:17] = 4
    lab[6:16, 17:29] = 9
    return lab


def test_registry_channels():
    assert TARGETS == {"binary": 1, "contour": 2, "distance": 2}
    assert [target_channels(k) for k in ("binary", "contour", "distance")] == [1, 2, 2]
    with pytest.raises(ValueError, match="unknown target 'instances'"):
        derive_target(np.zeros((4, 4), np.int32), "instances")


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_foreground_channel_is_the_binary_mask(kind):
    lab = _labels(1)
    y = derive_target(lab, kind)
    assert y.dtype == np.float32 and y.shape == lab.shape + (target_channels(kind),)
    np.testing.assert_array_equal(y[..., 0], (lab > 0).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_equals_per_label_scipy_edt_normalised(seed):
    lab = _labels(seed)
    ref = np.zeros(lab.shape, np.float64)
    for i in np.unique(lab[lab > 0]):
        d = ndimage.distance_transform_edt(lab == i)   # whole image: distance to the nearest pixel not in cell i
        ref[lab == i] = d[lab == i] / d[lab == i].max()
    y = derive_target(lab, "distance")
    np.testing.assert_array_equal(y[..., 1], ref.astype(np.float32))    # exact, bit for bit
    for _ in range(20):                                                   # and reproducible call after call
        np.testing.assert_array_equal(derive_target(lab.copy(), "distance"), y)
    assert np.all(y[..., 1][lab == 0] == 0)
    peaks = ndimage.maximum(y[..., 1], lab, index=np.unique(lab[lab > 0]))
    np.testing.assert_allclose(peaks, 1.0)                 # every cell peaks at exactly 1


def test_large_sparse_ids_give_the_same_target_as_small_ones():
    lab = _labels(4)
    ids = np.unique(lab[lab > 0])
    lut = dict(zip(ids, 2 ** 30 - 7 * np.arange(len(ids))))          # ids near 2^31, not sorted like the originals
    big = np.vectorize(lambda v: lut.get(v, 0))(lab).astype(np.int32)
    for kind in ("contour", "distance"):
        np.testing.assert_array_equal(derive_target(big, kind), derive_target(lab, kind))
    full = np.where(lab > 0, big, 2 ** 29)                            # no background at all: nothing maps to 0
    assert derive_target(full, "distance")[..., 1].min() > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_contour_equals_skimage_inner_boundaries(seed):
    lab = _labels(seed)
    band = derive_target(lab, "contour")[..., 1]
    np.testing.assert_array_equal(band.astype(bool), find_boundaries(lab, mode="inner"))
    assert set(np.unique(band)) <= {0.0, 1.0}


def test_touching_cells_are_separated():
    lab = _touching_pair()
    fg = lab > 0
    assert ndimage.label(fg)[1] == 1                       # one blob for a binary target
    band = derive_target(lab, "contour")[..., 1].astype(bool)
    assert band[10, 16] and band[10, 17]                   # one px of each cell along the shared edge
    assert ndimage.label(fg & ~band)[1] == 2               # interiors are two objects
    dist = derive_target(lab, "distance")[..., 1]
    assert dist[10, 16] < 0.3 and dist[10, 17] < 0.3       # low where the cells touch
    peaks = ndimage.label(dist == 1.0)
    assert peaks[1] == 2 and {int(lab[peaks[0] == k][0]) for k in (1, 2)} == {4, 9}


def test_patch_edge_is_not_a_cell_boundary():
    lab = np.zeros((20, 20), np.int32)
    lab[:, :8] = 3                                         # a cell cut by the left and top/bottom patch edges
    y = derive_target(lab, "contour")
    assert y[:, :7, 1].sum() == 0 and y[:, 7, 1].all()     # only its visible border to the background
    d = derive_target(lab, "distance")[..., 1]
    np.testing.assert_allclose(d[5, :8], np.arange(8, 0, -1) / 8)   # distance to the visible border only
    full = np.full((16, 16), 2, np.int32)                  # a cell covering the whole patch: flat plateau
    np.testing.assert_array_equal(derive_target(full, "distance")[..., 1], 1.0)


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_empty_patch_is_all_background(kind):
    y = derive_target(np.zeros((32, 32), np.int32), kind)
    assert y.shape == (32, 32, target_channels(kind)) and not y.any()


def test_resolve_target():
    labels = [_labels(0)]
    binary = [(_labels(0) > 0).astype(np.uint8) * 255, np.zeros((8, 8), np.uint8)]
    three_class = [np.array([[0, 1, 2]], np.uint8)]        # background / interior / border classes: not ids
    blurred = [cv2.GaussianBlur(binary[0], (0, 0), 1.0)]  # anti-aliased: many grey levels, all along the edges
    assert len(np.unique(blurred[0])) > 20 and not is_instance_mask(blurred[0])
    assert carries_instance_ids(labels) and not carries_instance_ids(binary) and not carries_instance_ids(three_class)
    assert not carries_instance_ids(blurred) and resolve_target("auto", blurred) == ("binary", "")
    assert resolve_target("distance", blurred)[0] == "binary"
    assert resolve_target("auto", labels) == ("distance", "")
    assert resolve_target("auto", binary) == ("binary", "")
    assert resolve_target("contour", labels) == ("contour", "")
    assert resolve_target("binary", labels) == ("binary", "")
    kind, why = resolve_target("distance", binary)
    assert kind == "binary" and "instance-label masks" in why and "'distance'" in why
    with pytest.raises(ValueError, match="unknown target"):
        resolve_target("instances", labels)


def test_split_shared_ids_gives_each_part_its_own_id():
    lab = np.zeros((20, 30), np.int32)
    lab[2:8, 2:8] = 7              # 36 px
    lab[12:15, 20:23] = 7          # 9 px, same id, not connected
    lab[2:5, 20:26] = 300          # another cell
    lab[10, 10] = 300              # one stray pixel of it
    lab[7, 8] = 5                  # touches id 7 diagonally: a different id, not a shared one
    out, report = split_shared_ids(lab)
    assert report == {"ids": [7, 300], "extra_parts": 2, "largest_extra_px": 9}
    assert out.dtype == np.int32 and np.array_equal(out > 0, lab > 0)
    assert (out[2:8, 2:8] == 7).all() and (out[2:5, 20:26] == 300).all()   # the largest part keeps its id
    new = {int(out[12, 20]), int(out[10, 10])}
    assert len(new) == 2 and min(new) > 300 and (out[12:15, 20:23] == out[12, 20]).all()
    diagonal = np.zeros((6, 6), np.int32)
    diagonal[1, 1] = diagonal[2, 2] = 4                     # 8-connected: one object
    same, rep = split_shared_ids(diagonal)
    assert same is diagonal and rep["extra_parts"] == 0
