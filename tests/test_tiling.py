"""Tiling round trips on random shapes: the patchify dependency, overlapping tiles with an exact blend-back."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.tiling import TileAccumulator, axis_origins, blend_window, extract_tiles, tile_origins


def test_patchify_runs_on_numpy2():
    import patchify

    assert int(np.__version__.split(".")[0]) >= 2
    img = np.arange(6 * 8).reshape(6, 8)
    p = patchify.patchify(img, (2, 4), step=2)
    assert p.shape == (3, 3, 2, 4)
    np.testing.assert_array_equal(p[1, 2], img[2:4, 4:8])
    p = patchify.patchify(img, (2, 2), step=2)
    assert p.shape == (3, 4, 2, 2)
    np.testing.assert_array_equal(patchify.unpatchify(p, img.shape), img)


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_tiles_exact_inverse(seed):
    rng = np.random.default_rng(100 + seed)
    tile = int(rng.choice([8, 16, 24]))
    overlap = int(rng.integers(0, tile // 2 + 1))
    h, w = int(rng.integers(tile, 90)), int(rng.integers(tile, 90))
    img = rng.random((h, w, 2)).astype(np.float32)
    origins = tile_origins((h, w), tile, overlap)
    tiles = extract_tiles(img, origins, tile)
    assert tiles.shape == (len(origins), tile, tile, 2)
    ys = sorted({y for y, _ in origins})
    assert ys[0] == 0 and ys[-1] == h - tile and all(b - a <= tile - overlap for a, b in zip(ys, ys[1:]))
    acc = TileAccumulator((h, w, 2), blend_window(tile, overlap))
    acc.add(tiles, origins)
    np.testing.assert_allclose(acc.result(), img, rtol=1e-5, atol=1e-6)


def test_axis_origins_and_window():
    assert axis_origins(10, 4, 0) == [0, 4, 6]
    assert axis_origins(4, 4, 2) == [0]
    with pytest.raises(ValueError, match="smaller than the tile"):
        axis_origins(3, 4, 0)
    with pytest.raises(ValueError, match="overlap"):
        axis_origins(10, 4, 4)
    win = blend_window(16, 4)
    assert win.shape == (16, 16) and win.min() > 0 and win[8, 8] == 1.0
    np.testing.assert_allclose(win, win.T)


def test_accumulator_requires_full_coverage():
    acc = TileAccumulator((8, 8, 1), blend_window(4, 0))
    acc.add(np.ones((1, 4, 4, 1)), [(0, 0)])
    with pytest.raises(ValueError, match="no tile"):
        acc.result()
