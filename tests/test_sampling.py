"""Rare-foreground oversampling weights and hard-example mining re-weighting."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.sampling import (FOREGROUND_CLASSES, HardMiner, PatchIndex, foreground_class, hard_mining_callback,
                                 parse_foreground_weights, per_patch_bce_dice)
from cellseg_tf.data.tiling import axis_origins

P = 16


def _mask(h=64, w=64):
    """Mostly background, one small blob (small-ROI patches) and one big square (large-ROI patches)."""
    m = np.zeros((h, w), np.uint8)
    m[5:8, 5:8] = 1          # 9 px: < 6.25 % of a 16×16 patch (16 px)
    m[40:60, 40:60] = 1
    return m


def test_foreground_class_thresholds():
    np.testing.assert_array_equal(foreground_class([0.0, 1e-4, 0.0624, 0.0625, 0.5, 1.0]), [0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(foreground_class([0.05, 0.2], small=0.1), [1, 2])


def test_parse_foreground_weights():
    np.testing.assert_array_equal(parse_foreground_weights({"small": 4, "large": 2}), [1, 4, 2])
    np.testing.assert_array_equal(parse_foreground_weights("1,4,2"), [1, 4, 2])
    np.testing.assert_array_equal(parse_foreground_weights("background=0.5,small=3"), [0.5, 3, 1])
    assert parse_foreground_weights(None) is None
    for bad in ({"tiny": 1}, (1, 2), (-1, 1, 1), (0, 0, 0), "a,b,c"):
        with pytest.raises(ValueError):
            parse_foreground_weights(bad)


def test_index_fractions_match_brute_force():
    masks = [_mask(), _mask(40, 56)[::-1]]
    idx = PatchIndex(masks, P, stride=5)
    assert len(idx) == sum(len(axis_origins(m.shape[0], P, P - 5)) * len(axis_origins(m.shape[1], P, P - 5))
                           for m in masks)
    for i in range(len(idx)):
        m = masks[idx.image[i]]
        y, x = idx.y[i], idx.x[i]
        assert y + P <= m.shape[0] and x + P <= m.shape[1]
        assert idx.fraction[i] == pytest.approx(m[y:y + P, x:x + P].mean())
    last_y = {int(y) for y, k in zip(idx.y, idx.image) if k == 0}
    assert max(last_y) == 64 - P  # the border is covered
    counts = idx.class_counts()
    assert set(counts) == set(FOREGROUND_CLASSES) and all(v > 0 for v in counts.values())


def test_class_weights_set_expected_shares_and_draws_follow():
    idx0 = PatchIndex([_mask()], P, stride=4)
    n = idx0.class_counts()
    base = idx0.class_shares()
    assert base["small"] == pytest.approx(n["small"] / len(idx0))  # no weights: uniform over candidates
    idx = PatchIndex([_mask()], P, stride=4, class_weights={"background": 1, "small": 8, "large": 2})
    shares = idx.class_shares()
    total = n["background"] + 8 * n["small"] + 2 * n["large"]
    assert shares["small"] == pytest.approx(8 * n["small"] / total)
    assert shares["small"] > 3 * base["small"]
    rng = np.random.default_rng(0)
    m = _mask()
    drawn = []
    for _ in range(3000):
        k, y, x = idx.draw(rng)
        assert 0 <= y <= 64 - P and 0 <= x <= 64 - P
        drawn.append(m[y:y + P, x:x + P].mean())
    got = np.bincount(foreground_class(np.array(drawn)), minlength=3) / len(drawn)
    assert abs(got[1] - shares["small"]) < 0.08  # jitter moves a few patches across class borders
    assert got[1] > 2.5 * base["small"]


def test_weights_that_exclude_everything_are_an_error():
    with pytest.raises(ValueError, match="weight 0"):
        PatchIndex([np.zeros((32, 32), np.uint8)], P, class_weights=(0, 1, 1))


def test_set_losses_reweights_toward_hard_patches():
    idx = PatchIndex([_mask()], P, stride=8)
    before = idx.probabilities.copy()
    hard = 3
    losses = np.full(len(idx), 0.1)
    losses[hard] = 2.0
    idx.set_losses(np.arange(len(idx)), losses, mix=0.5)
    assert idx.probabilities[hard] > 5 * before[hard]
    assert idx.probabilities.sum() == pytest.approx(1.0)
    idx.set_losses([0], [0.1], mix=0.0)  # mix 0: mining off, back to the base weights
    np.testing.assert_allclose(idx.probabilities, before)
    with pytest.raises(ValueError):
        idx.set_losses([0, 1], [1.0], mix=0.5)
    with pytest.raises(ValueError):
        idx.set_losses([0], [np.nan])


def test_per_patch_loss_orders_patches():
    t = np.zeros((3, 4, 4, 1), np.float32)
    t[:, :2] = 1
    good, half, bad = t.copy(), np.full_like(t, 0.5), 1 - t
    losses = per_patch_bce_dice(np.concatenate([t, t, t]), np.concatenate([good, half, bad]))
    assert losses.shape == (9,) and losses[0] < losses[3] < losses[6]


def test_hard_miner_scores_subset_and_shifts_draws():
    m = _mask()
    img = m[..., None].astype(np.float32)
    idx = PatchIndex([m], P, stride=8)
    miner = HardMiner(idx, [img], [m], max_patches=10, seed=1)
    sel = miner.select(0)
    assert len(sel) == 10 and len(set(sel)) == 10 and not np.array_equal(sel, miner.select(1))
    x, y = miner.patches(sel[:3])
    assert x.shape == (3, P, P, 1) and y.shape == (3, P, P, 1)

    # a "model" that predicts all background: patches with foreground are the hard ones
    miner = HardMiner(idx, [img], [m], max_patches=None, mix=1.0)
    losses = miner.mine(lambda x: np.zeros(x.shape[:3] + (1,), np.float32), epoch=0, batch_size=7)
    assert losses.shape == (len(idx),) and np.isfinite(idx.loss).all()
    fg = idx.fraction > 0
    assert idx.probabilities[fg].sum() > 0.9


def test_keras_callback_reweights_during_fit():
    import keras

    m = _mask(32, 32)
    img = m[..., None].astype(np.float32)
    idx = PatchIndex([m], P, stride=8)
    miner = HardMiner(idx, [img], [m], max_patches=None)
    model = keras.Sequential([keras.Input((P, P, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.repeat(img[None, :P, :P], 4, axis=0)
    y = np.repeat(m[None, :P, :P, None].astype(np.float32), 4, axis=0)
    hist = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[hard_mining_callback(miner, batch_size=4)])
    assert np.isfinite(idx.loss).all()
    assert len(hist.history["hard_mining_loss"]) == 2
    assert not np.allclose(idx.probabilities, 1 / len(idx))
    # resumable: the scored losses survive a restart (JSON round trip) and give the same draw weights
    import json

    cb = hard_mining_callback(miner)
    state = json.loads(json.dumps(cb.get_state()))
    fresh = PatchIndex([m], P, stride=8)
    hard_mining_callback(HardMiner(fresh, [img], [m])).set_resume_state(state)
    np.testing.assert_allclose(fresh.probabilities, idx.probabilities)
