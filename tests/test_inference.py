"""Tiled prediction: grid == full-image prediction, seamless overlap blending, streamed TIFFs, normalisation."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.inference import (PercentileEstimator, Predictor, intensity_range, normalize_rows, output_stem,
                                  resolve_inputs)
from cellseg_tf.io import write_png, write_tiff
from cellseg_tf.preprocessing import percentile_normalize

P = 32


def conv_model(size: int | None, kernel: int, seed: int = 0):
    """Translation-equivariant model: `kernel`×`kernel` conv (zero 'same' padding) -> relu -> 1×1 conv -> sigmoid."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(4, kernel, padding="same", activation="relu", bias_initializer="ones")(inp)
    x = keras.layers.Conv2D(1, 1, kernel_initializer="random_normal")(x)
    return keras.Model(inp, keras.layers.Activation("sigmoid")(x))


@pytest.fixture(scope="module")
def pointwise():
    """The same 1×1 (per-pixel) model built for 32-px tiles and for any size (weights copied)."""
    tiled, free = conv_model(P, 1), conv_model(None, 1, seed=9)
    free.set_weights(tiled.get_weights())
    return tiled, free


@pytest.fixture(scope="module")
def conv3():
    tiled, free = conv_model(P, 3), conv_model(None, 3, seed=9)
    free.set_weights(tiled.get_weights())
    return tiled, free


def test_grid_tiling_equals_direct_full_image_prediction(pointwise):
    tiled, free = pointwise
    image = np.random.default_rng(0).random((64, 96, 1)).astype(np.float32)   # sizes are multiples of the tile
    direct = np.asarray(free(image[None]))[0, ..., 0]
    pred = Predictor([tiled], tiling="grid")
    np.testing.assert_allclose(pred.predict_normalized(image), direct, atol=1e-6)
    assert pred.last_tile_count == 6
    # overlap tiling of a per-pixel model is exact too (blending averages identical values), at any size
    odd = image[:50, :77]
    np.testing.assert_allclose(Predictor([tiled], overlap=0.5).predict_normalized(odd), direct[:50, :77], atol=1e-5)


def test_overlap_blending_has_no_seam(conv3):
    """A 3×3-conv model on a constant image: grid tiles show seams at tile borders, blended overlap tiles do not."""
    tiled, free = conv3
    image = np.full((96, 96, 1), 0.6, np.float32)
    direct = np.asarray(free(image[None]))[0, ..., 0]
    interior = direct[4:-4, 4:-4]
    assert np.ptp(interior) < 1e-6  # the untiled prediction is constant away from the image border
    grid = Predictor([tiled], tiling="grid").predict_normalized(image)
    blended = Predictor([tiled], overlap=0.25).predict_normalized(image)
    grid_seam = np.abs(grid[4:-4, 4:-4] - interior).max()
    assert grid_seam > 1e-3  # tile-border artefacts exist for this model
    # overlap: tile edges get ~1% weight, so the seam is at least 50× weaker, and the map is continuous
    assert np.abs(blended[4:-4, 4:-4] - interior).max() < grid_seam / 50
    # reflect padding: even the image border matches the interior (no zero-padding artefact)
    assert np.abs(blended - interior.mean()).max() < grid_seam / 50
    # gradient image: the largest jump between neighbours stays as small as the image's own slope allows
    ramp = np.tile(np.linspace(0, 1, 96, dtype=np.float32)[None, :, None], (96, 1, 1))
    out = Predictor([tiled], overlap=0.25).predict_normalized(ramp)
    ref = np.asarray(free(ramp[None]))[0, ..., 0]
    assert np.abs(np.diff(out[4:-4], axis=1)).max() <= np.abs(np.diff(ref[4:-4, 4:-4], axis=1)).max() * 1.5 + 1e-4


def test_bilinear_unet_two_image_sizes_and_band_streaming(monkeypatch):
    """Fixed-size tiles avoid Keras' bilinear retracing trap; tiny bands (forced) give the same map as one band."""
    import cellseg_tf.inference as inference
    from cellseg_tf.models import build_model

    model = build_model("unet", (P, P, 1), base_filters=4, depth=2)
    pred = Predictor([model], batch_size=3)
    rng = np.random.default_rng(1)
    a, b = rng.random((45, 70, 1)).astype(np.float32), rng.random((100, 37, 1)).astype(np.float32)
    out_a, out_b = pred.predict_normalized(a), pred.predict_normalized(b)
    assert out_a.shape == (45, 70) and out_b.shape == (100, 37)
    monkeypatch.setattr(inference, "BAND_BYTES", 1)  # one tile row per band
    np.testing.assert_allclose(pred.predict_normalized(b), out_b, atol=1e-6)
    np.testing.assert_allclose(pred.predict_tiles(b[None, :P, :P])[0, ..., 0],
                               np.asarray(model(b[None, :P, :P]))[0, ..., 0], atol=1e-6)
    tiny = rng.random((5, 3, 1)).astype(np.float32)   # smaller than a tile: reflect-padded up
    assert pred.predict_normalized(tiny).shape == (5, 3)
    with pytest.raises(ValueError, match="models expect"):
        pred.predict_normalized(rng.random((40, 40, 3)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_streamed_percentiles_match_numpy(dtype, monkeypatch):
    import cellseg_tf.inference as inference

    rng = np.random.default_rng(2)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    data = rng.integers(info.min, info.max, (300, 200, 2), endpoint=True).astype(dtype) if info else \
        rng.normal(100, 30, (300, 200, 2)).astype(dtype)
    as_float = data.astype(np.float32)
    exact = (np.percentile(as_float, 2, axis=(0, 1)), np.percentile(as_float, 98, axis=(0, 1)))
    monkeypatch.setattr(inference, "EXACT_PERCENTILE_PX", 0)  # force the streamed estimator
    lo, hi = intensity_range(data, 2, 98)
    if info:  # integer images: exact histogram
        np.testing.assert_allclose(lo, exact[0], rtol=1e-6)
        np.testing.assert_allclose(hi, exact[1], rtol=1e-6)
    est = PercentileEstimator(data.shape, data.dtype, sample_px=15000)  # strided sample: every 2nd row/column
    for r0 in range(0, 300, 7):
        est.update(data[r0:r0 + 7], r0)
    if not info:
        slo, shi = est.result(2, 98)
        np.testing.assert_allclose(slo, exact[0], rtol=0.05)
        np.testing.assert_allclose(shi, exact[1], rtol=0.05)
        assert est.stride == 2


def test_normalisation_matches_training():
    image = np.random.default_rng(3).integers(0, 4000, (50, 60, 1)).astype(np.uint16)
    lo, hi = intensity_range(image)
    np.testing.assert_array_equal(normalize_rows(image, lo, hi), percentile_normalize(image))
    flat = np.full((8, 8, 1), 7, np.uint16)
    np.testing.assert_array_equal(normalize_rows(flat, *intensity_range(flat)), 0)


def test_streamed_tiff_equals_in_memory_prediction(tmp_path, conv3):
    """A 16-bit TIFF read in row windows (forced) predicts like the same image read whole (PNG)."""
    tiled, _ = conv3
    image = (np.random.default_rng(4).random((90, 75)) * 60000).astype(np.uint16)
    write_tiff(tmp_path / "big.tif", image)
    write_png(tmp_path / "big.png", image)
    pred = Predictor([tiled], overlap=0.25)
    streamed, read_s = pred.predict_file(tmp_path / "big.tif", stream_min_px=0)
    whole, _ = pred.predict_file(tmp_path / "big.png")
    assert streamed.shape == (90, 75) and read_s > 0
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    np.testing.assert_allclose(whole, pred.predict_image(image), atol=0)


def test_resolve_inputs_and_stems(tmp_path):
    for name in ("a.png", "sub/b.tif", "sub/deep/c.jpg", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p[len(str(tmp_path)) + 1:] for p in resolve_inputs(tmp_path)] == ["a.png", "sub/b.tif", "sub/deep/c.jpg"]
    assert len(resolve_inputs(str(tmp_path / "**" / "*.tif"))) == 1
    (tmp_path / "list.txt").write_text("# comment\na.png\nsub/b.tif\n")
    assert resolve_inputs(tmp_path / "list.txt") == [str(tmp_path / "a.png"), str(tmp_path / "sub/b.tif")]
    assert output_stem("x/stack.tif#3") == "stack_f3" and output_stem("x/img.v2.png") == "img.v2"
    with pytest.raises(FileNotFoundError):
        resolve_inputs(tmp_path / "missing")


def test_mixed_precision_checkpoint_predicts_in_float32_without_a_gpu(tmp_path):
    import keras

    from cellseg_tf.inference import accelerator_available, is_mixed_precision, load_models
    from cellseg_tf.models import build_model

    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    model = build_model("unet", (32, 32, 1), base_filters=4, depth=2)  # a model trained on a T4
    keras.mixed_precision.set_global_policy("float32")
    path = tmp_path / "mixed.keras"
    model.save(path)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    saved, = load_models([path], precision="saved")
    as32, = load_models([path], precision="float32")
    assert is_mixed_precision(saved) and not is_mixed_precision(as32)
    assert as32.get_layer("enc0_a_conv").compute_dtype == "float32"
    y16, y32 = np.asarray(saved(x, training=False)), np.asarray(as32(x, training=False))
    assert y32.dtype == np.float32 and np.abs(y16 - y32).max() < 2e-2  # same weights, float16 rounding only
    auto, = load_models([path])
    assert is_mixed_precision(auto) == accelerator_available()
    with pytest.raises(ValueError, match="precision must be"):
        load_models([path], precision="half")


def test_normalisation_percentiles_come_from_the_run_config(tmp_path):
    import keras

    from cellseg_tf.config import TrainConfig
    from cellseg_tf.inference import run_normalization
    from cellseg_tf.models import build_model

    model = build_model("unet", (32, 32, 1), base_filters=4, depth=2)
    runs = {}
    for name, (lo, hi) in {"a": (1.0, 99.5), "b": (1.0, 99.5), "c": (5.0, 95.0)}.items():
        run = tmp_path / name
        TrainConfig(norm_low=lo, norm_high=hi).save(run / "config.yaml")
        (run / "epochs").mkdir(parents=True)
        model.save(run / "best.keras")
        model.save(run / "epochs" / "epoch_001.keras")
        runs[name] = run
    loose = tmp_path / "loose.keras"
    model.save(loose)
    assert run_normalization([runs["a"] / "best.keras", runs["b"] / "epochs" / "epoch_001.keras"]) == (1.0, 99.5)
    assert run_normalization([loose]) is None
    with pytest.raises(ValueError, match="different normalisation percentiles"):
        run_normalization([runs["a"] / "best.keras", runs["c"] / "best.keras"])
    pred = Predictor.from_files([runs["a"] / "best.keras", loose])
    assert (pred.norm_low, pred.norm_high) == (1.0, 99.5)
    forced = Predictor.from_files([runs["c"] / "best.keras"], norm_low=2.0, norm_high=None)
    assert (forced.norm_low, forced.norm_high) == (2.0, 98.0)
    assert isinstance(keras.models.load_model(loose), keras.Model)
