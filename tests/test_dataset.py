"""tf.data pipelines: loading checks, deterministic patches, shapes for 1/3 channels, oversampling, hard mining."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.dataset import Pair, PatchSampler, grid_arrays, load_pair, load_pairs, train_dataset, val_dataset
from cellseg_tf.io import ImageReadError, write_png, write_tiff
from cellseg_tf.manifest import Sample
from cellseg_tf.sampling import foreground_class

P = 16


def _pair(h=40, w=48, c=1, seed=0, name="p"):
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    m[4:7, 4:7] = 1
    m[h // 2:, w // 2:] = 1
    img = (rng.random((h, w, c)) * 0.2 + m[..., None] * 0.7).astype(np.float32)
    return Pair(img, m, name)


def test_load_pair_normalises_16bit_and_checks(tmp_path):
    img = np.zeros((12, 12), np.uint16)
    img[3:9, 3:9] = 40000
    img[0, 0] = 1000
    write_tiff(tmp_path / "i.tif", img)
    write_png(tmp_path / "m.png", (img > 0).astype(np.uint8) * 255)
    p = load_pair(Sample(str(tmp_path / "i.tif"), str(tmp_path / "m.png"), "train", 2))
    assert p.image.dtype == np.float32 and p.image.shape == (12, 12, 1) and p.image.max() == 1.0
    assert p.mask.dtype == np.uint8 and p.mask.sum() == 37 and p.name == "i"
    write_png(tmp_path / "small.png", np.zeros((12, 11), np.uint8))
    with pytest.raises(ImageReadError, match=r"small.png: mask is 12×11 but image .*i.tif is 12×12"):
        load_pair(Sample(str(tmp_path / "i.tif"), str(tmp_path / "small.png"), "train", 2))
    with pytest.raises(ImageReadError, match="no mask"):
        load_pair(Sample(str(tmp_path / "i.tif"), None, "test", 3))
    assert len(load_pairs([Sample(str(tmp_path / "i.tif"), str(tmp_path / "m.png"), "train", 2)] * 2)) == 2


def test_outline_training_mask_rejected(tmp_path):
    import cv2

    yy, xx = np.mgrid[:64, :64]
    filled = np.zeros((64, 64), np.uint8)
    for cy, cx in ((12, 12), (12, 44), (44, 20), (46, 50)):
        filled[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = 1
    rings = filled - cv2.erode(filled, np.ones((3, 3), np.uint8))
    write_png(tmp_path / "i.png", filled * 200)
    write_png(tmp_path / "m.png", rings * 255)
    s = Sample(str(tmp_path / "i.png"), str(tmp_path / "m.png"), "train", 2)
    with pytest.raises(ImageReadError, match="OUTLINES"):
        load_pair(s)
    assert load_pair(s, check_outlines=False).mask.sum() == rings.sum()


def test_sampler_is_deterministic_and_pads_small_images():
    pairs = [_pair(), _pair(10, 12, name="tiny")]  # tiny is smaller than a patch: padded, never rejected
    a, b = PatchSampler(pairs, P, "default", seed=5), PatchSampler(pairs, P, "default", seed=5)
    for i in (0, 7, 123):
        xa, ya = a.sample(i)
        xb, yb = b.sample(i)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (P, P, 1) and ya.shape == (P, P, 1) and set(np.unique(ya)) <= {0.0, 1.0}
    assert not np.array_equal(a.sample(1)[0], a.sample(2)[0])
    assert a.pairs[1].image.shape[:2] == (P, P)
    with pytest.raises(ValueError, match="no training images"):
        PatchSampler([], P)


@pytest.mark.parametrize("channels", [1, 3])
def test_train_and_val_datasets_shapes(channels):
    pairs = [_pair(c=channels), _pair(c=channels, seed=1)]
    ds = train_dataset(pairs, P, 4, policy="brightfield_2stage", seed=0)
    assert ds.element_spec[0].shape.as_list() == [4, P, P, channels]
    assert ds.element_spec[1].shape.as_list() == [4, P, P, 1]
    batches = [(x.numpy(), y.numpy()) for x, y in ds.take(2)]
    again = [(x.numpy(), y.numpy()) for x, y in train_dataset(pairs, P, 4, policy="brightfield_2stage").take(2)]
    for (x, y), (x2, y2) in zip(batches, again):
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and set(np.unique(y)) <= {0.0, 1.0}
        np.testing.assert_array_equal(x, x2)  # seeded: same batches whatever the thread schedule
    resumed = next(iter(train_dataset(pairs, P, 4, policy="brightfield_2stage", start=4)))[0].numpy()
    np.testing.assert_array_equal(resumed, batches[1][0])  # start skips sample indices
    imgs, masks = grid_arrays(pairs, P)
    n = 2 * len(range(0, 40, P)) * len(range(0, 48, P))
    assert imgs.shape == (n, P, P, channels) and masks.shape == (n, P, P, 1)
    assert sum(int(x.shape[0]) for x, _ in val_dataset(pairs, P, 5)) == n


def test_oversampling_raises_small_roi_share():
    pairs = [_pair(64, 64)]
    plain = PatchSampler(pairs, P, "none", seed=0)
    over = PatchSampler(pairs, P, "none", seed=0, foreground_weights={"background": 1, "small": 10, "large": 1})

    def small_share(s):
        return np.mean([foreground_class(s.sample(i)[1].mean()) == 1 for i in range(600)])

    assert over.index is not None and plain.index is None
    assert small_share(over) > 2 * small_share(plain)
    ds = train_dataset(pairs, P, 8, "none", foreground_weights="1,10,1")
    assert next(iter(ds))[0].shape == (8, P, P, 1)


def test_hard_miner_from_sampler_feeds_train_dataset():
    pairs = [_pair(48, 48)]
    sampler = PatchSampler(pairs, P, "none", seed=0)
    miner = sampler.hard_miner(max_patches=None, mix=1.0)
    assert sampler.index is not None and len(sampler.index) > 0
    # all-background predictor: only foreground patches have loss, so draws concentrate there
    miner.mine(lambda x: np.zeros(x.shape[:3] + (1,), np.float32))
    ds = train_dataset(None, P, 16, sampler=sampler)
    _, y = next(iter(ds))
    assert (y.numpy().reshape(16, -1).max(axis=1) > 0).all()
    with pytest.raises(ValueError, match="patch_size"):
        train_dataset(None, 32, 4, sampler=sampler)
