"""Tiled prediction: grid == full-image prediction, seamless overlap blending, streamed TIFFs, model loading."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.io import write_png, write_tiff
from cellseg_tf.predict.inference import Predictor
from cellseg_tf.predict.options import PredictOptions

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
    pred = Predictor([tiled], PredictOptions(tiling="grid"))
    np.testing.assert_allclose(pred.predict_normalized(image), direct, atol=1e-6)
    assert pred.last_tile_count == 6
    # any size: the grid is reflect-padded at the bottom/right, overlap tiles are blended (identical values here)
    odd = image[:50, :77]
    np.testing.assert_allclose(pred.predict_normalized(odd), direct[:50, :77], atol=1e-6)
    assert pred.last_tile_count == 2 * 3
    overlap = Predictor([tiled], PredictOptions(overlap=0.5))
    np.testing.assert_allclose(overlap.predict_normalized(odd), direct[:50, :77], atol=1e-5)


def test_grid_tiles_are_patchify_tiles(conv3, monkeypatch):
    """--tiling grid cuts the reflect-padded image with patchify and puts the tile maps back with unpatchify: each
    32-px block of the vote map is the model's output on exactly that block of the padded image."""
    import patchify

    tiled, _ = conv3
    image = np.random.default_rng(5).random((40, 70, 1)).astype(np.float32)
    calls = []
    real = patchify.patchify
    monkeypatch.setattr(patchify, "patchify", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    vote = Predictor([tiled], PredictOptions(tiling="grid")).predict_normalized(image)
    assert calls and all(c == ((P, P, 1),) for c in calls)
    padded = np.pad(image, ((0, 64 - 40), (0, 96 - 70), (0, 0)), mode="symmetric")
    blocks = patchify.unpatchify(np.asarray(tiled(real(padded, (P, P, 1), step=P).reshape(-1, P, P, 1)))
                                 .reshape(2, 3, 1, P, P, 1), (64, 96, 1))
    np.testing.assert_allclose(vote, blocks[:40, :70, 0], atol=1e-6)


def test_overlap_blending_has_no_seam(conv3):
    """A 3×3-conv model on a constant image: grid tiles show seams at tile borders, blended overlap tiles do not."""
    tiled, free = conv3
    image = np.full((96, 96, 1), 0.6, np.float32)
    direct = np.asarray(free(image[None]))[0, ..., 0]
    interior = direct[4:-4, 4:-4]
    assert np.ptp(interior) < 1e-6  # the untiled prediction is constant away from the image border
    grid = Predictor([tiled], PredictOptions(tiling="grid")).predict_normalized(image)
    blended = Predictor([tiled], PredictOptions(overlap=0.25)).predict_normalized(image)
    grid_seam = np.abs(grid[4:-4, 4:-4] - interior).max()
    assert grid_seam > 1e-3  # tile-border artefacts exist for this model
    # overlap: tile edges get ~1% weight, so the seam is at least 50× weaker, and the map is continuous
    assert np.abs(blended[4:-4, 4:-4] - interior).max() < grid_seam / 50
    # reflect padding: even the image border matches the interior (no zero-padding artefact)
    assert np.abs(blended - interior.mean()).max() < grid_seam / 50
    # gradient image: the largest jump between neighbours stays as small as the image's own slope allows
    ramp = np.tile(np.linspace(0, 1, 96, dtype=np.float32)[None, :, None], (96, 1, 1))
    out = Predictor([tiled], PredictOptions(overlap=0.25)).predict_normalized(ramp)
    ref = np.asarray(free(ramp[None]))[0, ..., 0]
    assert np.abs(np.diff(out[4:-4], axis=1)).max() <= np.abs(np.diff(ref[4:-4, 4:-4], axis=1)).max() * 1.5 + 1e-4


def test_bilinear_unet_two_image_sizes_and_band_streaming(monkeypatch):
    """Fixed-size tiles avoid Keras' bilinear retracing trap; tiny bands (forced) give the same map as one band."""
    import cellseg_tf.predict.inference as inference
    from cellseg_tf.models import build_model

    model = build_model("unet", (P, P, 1), base_filters=4, depth=2)
    pred = Predictor([model], PredictOptions(batch_size=3))
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


def test_streamed_tiff_equals_in_memory_prediction(tmp_path, conv3):
    """A 16-bit TIFF read in row windows (forced) predicts like the same image read whole (PNG)."""
    tiled, _ = conv3
    image = (np.random.default_rng(4).random((90, 75)) * 60000).astype(np.uint16)
    write_tiff(tmp_path / "big.tif", image)
    write_png(tmp_path / "big.png", image)
    pred = Predictor([tiled], PredictOptions(overlap=0.25))
    streamed, read_s = pred.predict_file(tmp_path / "big.tif", stream_min_px=0)
    whole, _ = pred.predict_file(tmp_path / "big.png")
    assert streamed.shape == (90, 75) and read_s > 0
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    np.testing.assert_allclose(whole, pred.predict_image(image), atol=0)


def test_prediction_normalises_like_training(tmp_path, monkeypatch):
    """An identity model (1×1 conv, weight 1) makes the vote map the normalised input: in memory, and from a TIFF
    streamed in row windows, it equals training's `percentile_normalize` of the same image."""
    import keras

    import cellseg_tf.data.preprocessing as preprocessing
    from cellseg_tf.data.preprocessing import percentile_normalize

    inp = keras.Input((P, P, 1))
    identity = keras.Model(inp, keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros")(inp))
    image = (np.random.default_rng(6).random((70, 45)) * 50000 + 300).astype(np.uint16)
    write_tiff(tmp_path / "img.tif", image)
    pred = Predictor([identity], PredictOptions(tiling="grid", norm_low=1.0, norm_high=99.0))
    for exact_px in (preprocessing.EXACT_PERCENTILE_PX, 0):  # 0: the streamed histogram estimator on both sides
        monkeypatch.setattr(preprocessing, "EXACT_PERCENTILE_PX", exact_px)
        trained = percentile_normalize(image, 1.0, 99.0)
        np.testing.assert_array_equal(pred.predict_image(image), trained)
        streamed, _ = pred.predict_file(tmp_path / "img.tif", stream_min_px=0)
        np.testing.assert_allclose(streamed, trained, atol=1e-6)


def test_mixed_precision_checkpoint_predicts_in_float32_without_a_gpu(tmp_path):
    import keras

    from cellseg_tf.models import build_model
    from cellseg_tf.models.loading import accelerator_available, is_mixed_precision, load_models

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

    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.models import build_model
    from cellseg_tf.predict.options import run_normalization

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
    assert pred.options.normalization() == (1.0, 99.5)
    forced = Predictor.from_files([runs["c"] / "best.keras"], PredictOptions(norm_low=2.0))
    from cellseg_tf.data.preprocessing import NORM_HIGH

    assert forced.options.normalization() == (2.0, NORM_HIGH)        # the other end: the package default
    (runs["c"] / "config.yaml").write_text("norm_low: 1.0\nnot_a_field: 3\n")
    with pytest.raises(ValueError, match=r"c/config.yaml: cannot read the run config.*not_a_field"):
        run_normalization([runs["c"] / "best.keras"])
    assert isinstance(keras.models.load_model(loose), keras.Model)
