"""tf.data pipelines: loading checks, deterministic patches, shapes for 1/3 channels, oversampling, hard mining."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.dataset import (Pair, PatchSampler, grid_arrays, load_pair, load_pairs, load_training_pairs,
                                     train_dataset, val_dataset)
from cellseg_tf.data.io import ImageReadError, write_png, write_tiff
from cellseg_tf.data.manifest import Sample
from cellseg_tf.data.sampling import foreground_class

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


@pytest.mark.parametrize("start", [0, 3])
def test_train_batches_are_the_per_patch_draws_stacked(start):
    pairs = [_pair(), _pair(seed=1)]
    sampler = PatchSampler(pairs, P, "default", seed=2)
    batches = [(x.numpy(), y.numpy()) for x, y in train_dataset(None, P, 4, start=start, sampler=sampler).take(3)]
    for b, (x, y) in enumerate(batches):  # batch b = sample indices start + 4b ... start + 4b + 3, in order
        draws = [sampler.sample(start + 4 * b + j) for j in range(4)]
        np.testing.assert_array_equal(x, np.stack([d[0] for d in draws]))
        np.testing.assert_array_equal(y, np.stack([d[1] for d in draws]))


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


# ------------------------------------------------------------------------------------ instance-label masks


def _label_rows(tmp_path, masks: dict, size=(64, 64), seed=0) -> list[Sample]:
    """One grey PNG image per mask (any dtype, written as given: .png or .tif), as manifest rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (name, mask) in enumerate(masks.items()):
        img = tmp_path / f"img_{i}.png"
        write_png(img, ((mask > 0) * 150 + rng.integers(0, 60, size)).astype(np.uint8))
        path = tmp_path / name
        (write_tiff if name.endswith(".tif") else write_png)(path, mask)
        rows.append(Sample(str(img), str(path), "train", i + 2))
    return rows


def _nuclei_labels(seed, shape=(64, 64), offset=0):
    from cellseg_tf.data.synthetic import nuclei_image

    _, lab = nuclei_image(shape, n_nuclei=shape[0] * shape[1] // 400, radius=(4, 8), rng=np.random.default_rng(seed))
    return np.where(lab > 0, lab + offset, 0)


def test_label_ids_above_255_survive_16bit_png_and_tiff(tmp_path):
    png = _nuclei_labels(0, offset=400).astype(np.uint16)        # ids 401.. in a 16-bit PNG
    tif = _nuclei_labels(1, offset=70000).astype(np.uint32)      # ids 70001.. in a 32-bit TIFF
    rows = _label_rows(tmp_path, {"a.png": png, "b.tif": tif})
    train, val, kind = load_training_pairs(rows, rows[1:], "auto")
    assert kind == "distance"
    for pair, ref in zip(train, (png, tif)):
        assert pair.mask.dtype == np.int32 and ref.max() > 255
        np.testing.assert_array_equal(pair.mask, ref.astype(np.int32))    # ids kept exactly, none merged
    assert len(np.unique(val[0].mask)) == len(np.unique(tif))
    s = PatchSampler(train, 32, "default", seed=0, target=kind)
    _, labels = s.augmented(3)
    assert set(np.unique(labels)) <= set(np.unique(train[0].mask)) | set(np.unique(train[1].mask))
    from cellseg_tf.data.augment import apply_policy, get_policy

    huge = np.where(png > 0, png.astype(np.int64) + 2 ** 24, 0).astype(np.int32)   # beyond float32's exact range
    _, warped = apply_policy(get_policy("brightfield_2stage", 64, seed=1), train[0].image, huge, labels=True)
    assert warped.dtype == np.int32 and set(np.unique(warped)) <= set(np.unique(huge)) and len(np.unique(warped)) > 3


def test_binary_masks_train_exactly_as_before(tmp_path, recwarn):
    import cv2

    aliased = cv2.GaussianBlur((_nuclei_labels(2) > 0).astype(np.uint8) * 255, (0, 0), 1.0)   # grey edges
    rows = _label_rows(tmp_path, {"a.png": (_nuclei_labels(0) > 0).astype(np.uint8) * 255,
                                  "b.png": (_nuclei_labels(1) > 0).astype(np.uint8), "c.png": aliased})
    train, val, kind = load_training_pairs(rows[::2], rows[1:2], "auto")
    assert kind == "binary" and not [w for w in recwarn if "mask" in str(w.message)]
    for got, ref in zip(train + val, load_pairs(rows[::2] + rows[1:2])):
        assert got.mask.dtype == np.uint8
        np.testing.assert_array_equal(got.mask, ref.mask)
        np.testing.assert_array_equal(got.image, ref.image)
    a = PatchSampler(train, 32, "default", seed=1)                 # today's sampler
    b = PatchSampler(train, 32, "default", seed=1, target=kind)
    for i in (0, 5):
        np.testing.assert_array_equal(a.sample(i)[1], b.sample(i)[1])


def test_binary_masks_with_an_explicit_instance_target_warn_once_and_fall_back(tmp_path):
    rows = _label_rows(tmp_path, {"a.png": (_nuclei_labels(0) > 0).astype(np.uint8) * 255,
                                  "b.png": (_nuclei_labels(1) > 0).astype(np.uint8) * 255})
    with pytest.warns(UserWarning) as record:
        train, _, kind = load_training_pairs(rows, rows[:1], "distance")
    messages = [str(w.message) for w in record]
    assert kind == "binary" and train[0].mask.dtype == np.uint8
    assert len(messages) == 1 and "needs instance-label masks" in messages[0] and "binary" in messages[0]
    with pytest.warns(UserWarning, match="mask_threshold=127 reads every mask as binary"):
        rows = _label_rows(tmp_path, {"c.png": _nuclei_labels(2, offset=130).astype(np.uint8)})
        _, _, kind = load_training_pairs(rows, [], "contour", mask_threshold=127)
    assert kind == "binary"


def test_one_id_on_two_separate_cells_is_split_with_a_warning_naming_the_file(tmp_path):
    lab = _nuclei_labels(0).astype(np.uint16)
    lab[2:8, 50:58] = lab.max()                                    # a second, disconnected blob with an existing id
    clean = _nuclei_labels(1).astype(np.uint16)
    rows = _label_rows(tmp_path, {"shared.png": lab, "clean.png": clean})
    with pytest.warns(UserWarning, match=r"shared\.png \(1 id\(s\), 1 extra part\(s\), largest 48 px\)") as record:
        train, _, kind = load_training_pairs(rows, [], "contour")
    assert kind == "contour" and not any("clean.png" in str(w.message) for w in record)
    assert len(np.unique(train[0].mask)) == len(np.unique(lab)) + 1
    np.testing.assert_array_equal(train[1].mask, clean)


def test_empty_masks_are_allowed_all_background_and_named(tmp_path):
    rows = _label_rows(tmp_path, {"cells.png": _nuclei_labels(0).astype(np.uint16),
                                  "empty.png": np.zeros((64, 64), np.uint16)})
    with pytest.warns(UserWarning, match=r"1 mask\(s\) are empty \(no foreground\): empty\.png"):
        train, _, kind = load_training_pairs(rows, [], "auto")
    assert kind == "distance"
    s = PatchSampler(train[1:], 32, "default", seed=0, target=kind)
    _, y = s.sample(0)
    assert y.shape == (32, 32, 2) and not y.any()


@pytest.mark.parametrize("kind", ["contour", "distance"])
def test_instance_target_is_derived_after_augmentation(kind):
    from cellseg_tf.data.targets import derive_target

    lab = _nuclei_labels(3, shape=(80, 80), offset=1000).astype(np.int32)
    img = (lab > 0).astype(np.float32)[..., None] * 0.8
    labels = PatchSampler([Pair(img, lab, "x")], 32, "brightfield_2stage", seed=2, target=kind)
    binary = PatchSampler([Pair(img, (lab > 0).astype(np.uint8), "x")], 32, "brightfield_2stage", seed=2)
    warped_somewhere = False
    for i in range(12):
        aug_img, aug_lab = labels.augmented(i)
        _, y = labels.sample(i)
        np.testing.assert_array_equal(y, derive_target(aug_lab, kind))            # derive(augment(labels))
        assert set(np.unique(aug_lab)) <= set(np.unique(lab))                     # nearest neighbour: no new ids
        bin_img, bin_mask = binary.augmented(i)
        np.testing.assert_array_equal(aug_img, bin_img)                           # the same draw as binary
        np.testing.assert_array_equal(aug_lab > 0, bin_mask > 0)
        warped_somewhere |= not any(np.array_equal(aug_lab, np.rot90(c, k)) for c in _crops(lab, 32)
                                    for k in range(4))
    assert warped_somewhere


def _crops(lab, p, step=8):
    return [lab[y:y + p, x:x + p] for y in range(0, lab.shape[0] - p + 1, step)
            for x in range(0, lab.shape[1] - p + 1, step)]


def test_instance_train_and_val_datasets_have_two_channels():
    lab = _nuclei_labels(4, shape=(48, 48)).astype(np.int32)
    pairs = [Pair((lab > 0).astype(np.float32)[..., None], lab, "x")]
    sampler = PatchSampler(pairs, P, "default", seed=0, target="distance")
    ds = train_dataset(None, P, 4, sampler=sampler)
    assert ds.element_spec[1].shape.as_list() == [4, P, P, 2]
    _, y = next(iter(ds))
    assert 0 <= y.numpy().min() and y.numpy().max() <= 1
    imgs, targets = grid_arrays(pairs, P, target="distance")
    assert targets.shape == (9, P, P, 2)
    from cellseg_tf.data.targets import derive_target

    np.testing.assert_array_equal(targets[4], derive_target(lab[P:2 * P, P:2 * P], "distance"))
    assert next(iter(val_dataset(pairs, P, 9, target="contour")))[1].shape == (9, P, P, 2)
    miner = sampler.hard_miner(max_patches=None)                    # mining scores channel 0 against labels > 0
    losses = miner.mine(lambda x: np.full(x.shape[:3] + (2,), 0.5, np.float32))
    assert losses.shape == (len(sampler.index),) and np.isfinite(losses).all()
