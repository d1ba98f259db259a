"""Augmentation policies: registry, binary + aligned masks (warp a mask-shaped image), reproducibility, 1/3 channels."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from cellseg_tf.data.augment import (CoarseElastic, apply_policy, available_policies, geometric_stage, get_policy,
                                photometric_stage, register_policy)

P = 48


def _blobs(size=P):
    yy, xx = np.mgrid[:size, :size]
    m = (((yy - 20) ** 2 + (xx - 26) ** 2) < 11 ** 2).astype(np.uint8)
    m[4:12, 4:18] = 1
    m[36:44, 30:44] = 1
    return m


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_registry_has_the_documented_policies():
    assert {"none", "default", "unet_classic", "brightfield_2stage", "flips"} <= set(available_policies())
    with pytest.raises(KeyError, match="unknown augmentation policy 'bogus'.*default"):
        get_policy("bogus", P)
    with pytest.raises(ValueError, match="channels"):
        get_policy("default", P, channels=2)


def test_register_policy_adds_entry():
    @register_policy("_test_only")
    def _p(patch_size, channels):
        return A.Compose([A.HorizontalFlip(p=1.0)])

    img = np.arange(P * P, dtype=np.float32).reshape(P, P, 1) / (P * P)
    out, _ = apply_policy(get_policy("_test_only", P), img, _blobs())
    np.testing.assert_array_equal(out, img[:, ::-1])


@pytest.mark.parametrize("name", ["none", "flips", "default", "default_scale_blur", "unet_classic",
                                  "brightfield_2stage"])
@pytest.mark.parametrize("channels", [1, 3])
def test_policy_keeps_shape_dtype_binary_and_reproduces(name, channels):
    rng = np.random.default_rng(0)
    img = rng.random((P, P, channels)).astype(np.float32)
    mask = _blobs()
    outs = []
    for _ in range(2):
        pipeline = get_policy(name, P, channels, seed=11)
        outs.append([apply_policy(pipeline, img, mask) for _ in range(6)])
    for (i1, m1), (i2, m2) in zip(*outs):
        assert i1.shape == (P, P, channels) and i1.dtype == np.float32 and 0 <= i1.min() and i1.max() <= 1
        assert m1.shape == (P, P) and m1.dtype == np.uint8 and set(np.unique(m1)) <= {0, 1}
        np.testing.assert_array_equal(i1, i2)  # same seed -> same draws
        np.testing.assert_array_equal(m1, m2)
    if name == "none":
        np.testing.assert_array_equal(outs[0][0][0], img)
    else:
        assert any(not np.array_equal(i, img) for i, _ in outs[0])  # it does something


@pytest.mark.parametrize("name", ["flips", "unet_classic"])
def test_geometric_policies_keep_mask_aligned(name):
    """Image = the mask itself: after the policy, the thresholded image must coincide with the warped mask."""
    mask = _blobs()
    pipeline = get_policy(name, P, 1, seed=3)
    for _ in range(8):
        img, m = apply_policy(pipeline, mask[..., None].astype(np.float32), mask)
        assert _iou(img[..., 0] > 0.5, m > 0) > 0.9


@pytest.mark.parametrize("name", ["default", "default_scale_blur", "brightfield_2stage", "unet_classic", "flips"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_full_policy_keeps_mask_aligned(name, channels):
    """Image = the mask (in every channel), the whole policy, photometric stage included: the augmented image must
    still trace the augmented mask. |Pearson r| (inversion flips its sign) stays high when both received the same
    geometric transform; a transform applied to one of them only would drop it to about 0 on these blobs."""
    mask = _blobs()
    image = np.repeat(mask[..., None].astype(np.float32), channels, axis=-1)
    pipeline = get_policy(name, P, channels, seed=11)
    scores = []
    for _ in range(24):
        img, m = apply_policy(pipeline, image, mask)
        assert set(np.unique(m)) <= {0, 1} and img.shape == (P, P, channels)
        if m.min() == m.max() or img.std() == 0:
            continue
        scores.append(abs(np.corrcoef(img.mean(axis=-1).ravel(), m.ravel())[0, 1]))
    assert len(scores) >= 20 and min(scores) > 0.6 and np.median(scores) > 0.85, scores
    shifted = np.roll(mask, 9, axis=1)  # the check does catch a misaligned pair
    assert abs(np.corrcoef(mask.ravel().astype(float), shifted.ravel())[0, 1]) < 0.3


@pytest.mark.parametrize("k", range(len(geometric_stage(P))))
def test_each_brightfield_geometric_transform_aligned_and_nearest(k):
    t = geometric_stage(P)[k]
    if hasattr(t, "mask_interpolation"):
        assert t.mask_interpolation in (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT)
    pipeline = A.Compose([t])
    pipeline.set_random_seed(k)
    mask = _blobs()
    for _ in range(4):
        img, m = apply_policy(pipeline, mask[..., None].astype(np.float32), mask)
        assert set(np.unique(m)) <= {0, 1}
        assert _iou(img[..., 0] > 0.5, m > 0) > 0.9, type(t).__name__


@pytest.mark.parametrize("channels", [1, 3])
def test_photometric_stage_leaves_mask_untouched(channels):
    mask = _blobs()
    img = np.random.default_rng(1).random((P, P, channels)).astype(np.float32)
    names = {type(t).__name__ for t in photometric_stage(channels)}
    assert {"MotionBlur", "Defocus", "GaussNoise", "CLAHE", "RandomGamma", "InvertImg"} <= names
    assert ("HueSaturationValue" in names) == (channels == 3) and ("ISONoise" in names) == (channels == 3)
    for t in photometric_stage(channels):
        pipeline = A.Compose([t])
        pipeline.set_random_seed(0)
        out, m = apply_policy(pipeline, img, mask)
        np.testing.assert_array_equal(m, mask)
        assert out.shape == img.shape


def test_brightfield_2stage_structure():
    pipeline = get_policy("brightfield_2stage", P, 3)
    first, second = pipeline.transforms
    assert isinstance(first, A.OneOf) and 0 < first.p < 1  # one photometric transform, or none
    assert isinstance(second, A.OneOf) and second.p == 1.0 and len(second.transforms) == len(geometric_stage(P))


def test_coarse_elastic_is_smooth_and_bounded():
    t = CoarseElastic(grid=3, displacement=3.0, smooth=0.08, p=1.0)
    t.set_random_seed(0)
    params = t.get_params_dependent_on_data({"shape": (64, 64)}, {})
    dx = params["map_x"] - np.arange(64, dtype=np.float32)[None, :]
    assert 0 < np.abs(dx).max() < 15
    assert np.abs(np.diff(dx, axis=1)).max() < 0.5  # smooth field: no tears/folds
    with pytest.raises(ValueError, match="grid"):
        CoarseElastic(grid=1)


def test_default_scale_blur_zooms_mask_and_blurs_image_only():
    """Over many draws the policy changes object size (zoom, mask follows) and blurs some images while their
    masks stay sharp binary: what distinguishes it from `default`."""
    from scipy import ndimage

    def object_size(m):                       # median area of the objects (their number changes at the borders)
        labels, n = ndimage.label(m)
        return float(np.median(np.bincount(labels.ravel())[1:])) if n else 0.0

    mask = _blobs()
    image = mask[..., None].astype(np.float32)
    pipeline = get_policy("default_scale_blur", P, 1, seed=5)
    areas, blurred = [], 0
    for _ in range(60):
        img, m = apply_policy(pipeline, image, mask)
        assert set(np.unique(m)) <= {0, 1}
        areas.append(object_size(m))
        inner = img[..., 0][(img[..., 0] > 0.02) & (img[..., 0] < 0.98)]
        blurred += inner.size > 0.05 * m.size
    ratio = np.array(areas) / object_size(mask)
    assert ratio.min() < 0.8 and ratio.max() > 1.25, ratio   # zoomed out and in, mask with the image
    assert 3 <= blurred <= 40, blurred                        # some images blurred, not all
