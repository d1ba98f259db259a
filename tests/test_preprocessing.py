"""Percentile normalisation (in memory and streamed) and padding: values, dtypes, constant images, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.preprocessing import (PercentileEstimator, intensity_range, normalize_rows, pad_to_multiple,
                                          percentile_normalize, rescale_pair, streamed_intensity_range)


def test_percentile_stretch_on_16bit_range():
    img = np.linspace(0, 60000, 101, dtype=np.float64).astype(np.uint16).reshape(1, 101, 1)
    out = percentile_normalize(img, 2, 98)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert (out[0, :3, 0] == 0).all() and (out[0, -3:, 0] == 1).all()  # darkest/brightest 2 % clipped
    np.testing.assert_allclose(out[0, 50, 0], 0.5, atol=1e-5)
    # 8-bit and 16-bit versions of the same picture land on the same [0, 1] scale
    img8 = (img.astype(np.float64) / 60000 * 255).round().astype(np.uint8)
    np.testing.assert_allclose(percentile_normalize(img8), out, atol=0.02)


def test_per_channel_and_2d_and_configurable():
    rgb = np.stack([np.arange(100) * 1.0, np.arange(100) * 10.0 + 5, np.full(100, 7.0)], -1).reshape(10, 10, 3)
    out = percentile_normalize(rgb, 0, 100)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)  # each channel stretched on its own
    assert (out[..., 2] == 0).all()  # constant channel: no division by zero
    assert percentile_normalize(np.arange(16.0).reshape(4, 4)).shape == (4, 4)
    assert percentile_normalize(np.full((5, 5), 3, np.uint16)).max() == 0.0
    with pytest.raises(ValueError, match="percentiles"):
        percentile_normalize(rgb, 60, 40)


def test_nan_and_empty_rejected():
    x = np.ones((4, 4), np.float32)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        percentile_normalize(x)
    with pytest.raises(ValueError, match="empty"):
        percentile_normalize(np.zeros((0, 4)))


@pytest.mark.parametrize("mode", ["reflect", "zero"])
def test_pad_to_multiple(mode):
    a = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    p = pad_to_multiple(a, 4, mode)
    assert p.shape == (8, 8, 2)
    np.testing.assert_array_equal(p[:5, :7], a)  # crop back with [:H, :W]
    if mode == "zero":
        assert (p[5:] == 0).all() and (p[:, 7:] == 0).all()
    else:
        np.testing.assert_array_equal(p[5, :7], a[4])  # symmetric reflection
    assert pad_to_multiple(a, 1, mode, min_size=9).shape == (9, 9, 2)  # small image padded up to a patch
    assert pad_to_multiple(np.ones((1, 1)), 4, mode).shape == (4, 4)
    assert pad_to_multiple(a[:4, :4], 4, mode) is not None and pad_to_multiple(a[:4, :4], 4, mode).shape == (4, 4, 2)
    with pytest.raises(ValueError):
        pad_to_multiple(a, 4, "wrap")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_streamed_percentiles_match_numpy(dtype, monkeypatch):
    import cellseg_tf.data.preprocessing as preprocessing

    rng = np.random.default_rng(2)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    data = rng.integers(info.min, info.max, (300, 200, 2), endpoint=True).astype(dtype) if info else \
        rng.normal(100, 30, (300, 200, 2)).astype(dtype)
    as_float = data.astype(np.float32)
    exact = (np.percentile(as_float, 2, axis=(0, 1)), np.percentile(as_float, 98, axis=(0, 1)))
    monkeypatch.setattr(preprocessing, "EXACT_PERCENTILE_PX", 0)  # force the streamed estimator
    lo, hi = intensity_range(data, 2, 98)
    if info:  # integer images: exact histogram
        np.testing.assert_allclose(lo, exact[0], rtol=1e-6)
        np.testing.assert_allclose(hi, exact[1], rtol=1e-6)
    # a row reader in odd windows gives the same numbers as the in-memory image
    monkeypatch.setattr(preprocessing, "PASS_BYTES", 7 * 200 * 2 * 8)
    slo, shi = streamed_intensity_range(lambda a, b: data[a:b], data.shape, data.dtype, 2, 98)
    np.testing.assert_array_equal(slo, lo)
    np.testing.assert_array_equal(shi, hi)
    est = PercentileEstimator(data.shape, data.dtype, sample_px=15000)  # strided sample: every 2nd row/column
    for r0 in range(0, 300, 7):
        est.update(data[r0:r0 + 7], r0)
    if not info:
        slo, shi = est.result(2, 98)
        np.testing.assert_allclose(slo, exact[0], rtol=0.05)
        np.testing.assert_allclose(shi, exact[1], rtol=0.05)
        assert est.stride == 2


def test_percentile_normalize_is_intensity_range_then_normalize_rows(monkeypatch):
    """Training (`percentile_normalize`) and prediction (`intensity_range` + `normalize_rows` band by band) give the
    same array, exact below EXACT_PERCENTILE_PX and through the streamed estimator above it."""
    import cellseg_tf.data.preprocessing as preprocessing

    image = np.random.default_rng(3).integers(0, 4000, (50, 60, 2)).astype(np.uint16)
    for exact_px in (preprocessing.EXACT_PERCENTILE_PX, 0):
        monkeypatch.setattr(preprocessing, "EXACT_PERCENTILE_PX", exact_px)
        lo, hi = intensity_range(image, 1, 99.5)
        banded = np.concatenate([normalize_rows(image[r:r + 16], lo, hi) for r in range(0, 50, 16)])
        np.testing.assert_array_equal(banded, percentile_normalize(image, 1, 99.5))
    flat = np.full((8, 8, 1), 7, np.uint16)
    np.testing.assert_array_equal(normalize_rows(flat, *intensity_range(flat)), 0)


def test_rescale_pair_keeps_ids_channels_and_sizes():
    labels = np.zeros((40, 60), np.int32)
    labels[5:25, 5:25], labels[10:30, 30:55] = 7, 300          # ids survive (no 0..1 interpolation of labels)
    image = np.stack([labels > 0, labels == 300], -1).astype(np.uint16) * 1000
    small_image, small = rescale_pair(image, labels, 0.7)
    assert small_image.shape == (28, 42, 2) and small_image.dtype == np.float32
    assert small.shape == (28, 42) and small.dtype == np.int32 and set(np.unique(small)) == {0, 7, 300}
    assert abs((small == 7).sum() - 0.49 * (labels == 7).sum()) < 0.1 * (labels == 7).sum()
    assert small_image[..., 0].max() <= 1000 and small_image[..., 0].min() >= 0   # area averaging: no overshoot
    one, _ = rescale_pair(image[..., :1], labels, 1.5)
    assert one.shape == (60, 90, 1)
    with pytest.raises(ValueError, match="scale"):
        rescale_pair(image, labels, 0)
