"""Few-shot adaptation: features of any zoo model, the solver, the adapted `.keras` model, CLI, and bad input.

Extractors are tiny untrained models (their features are fixed random filters plus, for the MSD, the image itself),
which is enough to test the mechanics: the perceptron on top is what adaptation fits.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from cellseg_tf.data.io import open_manifest, write_png  # noqa: E402
from cellseg_tf.data.manifest import write_manifest  # noqa: E402
from cellseg_tf.data.synthetic import make_dataset  # noqa: E402
from cellseg_tf.fewshot import AdaptConfig, adapt, feature_tensor, head_weights, report_path  # noqa: E402
from cellseg_tf.fewshot import solver  # noqa: E402
from cellseg_tf.fewshot.adapt import DEFAULT_FILTER_SIGMAS, default_filter_sigmas  # noqa: E402
from cellseg_tf.fewshot.support import (TileGrid, default_max_tiles, draw_support, gather_features,  # noqa: E402
                                       sample_pixels)
from cellseg_tf.models import build_model, target_kind  # noqa: E402


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    """6 synthetic 96×96 images (4 train / 1 val / 1 test), a fixed-size U-Net and a size-free MSD extractor."""
    root = tmp_path_factory.mktemp("fewshot")
    manifest = make_dataset(root / "data", n_images=6, shape=(96, 96), splits=(4, 1, 1), seed=3)
    keras.utils.set_random_seed(0)
    unet, msd = root / "unet.keras", root / "msd.keras"
    build_model("unet", input_shape=(48, 48, 1), base_filters=4, depth=2).save(unet)
    build_model("msd", input_shape=(None, None, 1), depth=4).save(msd)
    return SimpleNamespace(root=root, manifest=manifest, extractors=[str(unet), str(msd)])


def _config(fs, out, **kw) -> AdaptConfig:
    return AdaptConfig(**{"extractors": fs.extractors, "support": str(fs.manifest), "out": str(out), "shots": 3,
                          "seed": 0, "verbose": 0, **kw})


# ------------------------------------------------------------------------------------------------ features
def test_features_are_the_input_of_the_final_1x1_conv():
    unet = build_model("unet", input_shape=(None, None, 1), base_filters=4, depth=2)
    assert feature_tensor(unet) is unet.get_layer("dec0_b_relu").output
    msd = build_model("msd", input_shape=(None, None, 1), depth=3)
    assert feature_tensor(msd) is msd.get_layer("features").output
    # a model saved before the registered head existed: conv -> sigmoid Activation
    x = keras.Input((None, None, 1))
    f = keras.layers.Conv2D(5, 3, padding="same")(x)
    old = keras.Model(x, keras.layers.Activation("sigmoid")(keras.layers.Conv2D(1, 1)(f)))
    assert feature_tensor(old) is f


def test_feature_levels_add_the_decoder_blocks_upsampled_to_full_resolution():
    from cellseg_tf.fewshot.extractors import as_extractor, coarser_maps

    unet = build_model("unet", input_shape=(None, None, 1), base_filters=4, depth=3)
    maps = coarser_maps(unet, feature_tensor(unet), 9)          # asks for more levels than the U-Net has
    expected = [("dec1_b_relu", 2), ("dec2_b_relu", 4), ("bottleneck_b_relu", 8)]
    assert [s for _, s in maps] == [s for _, s in expected]
    assert all(t is unet.get_layer(name).output for (t, _), (name, _) in zip(maps, expected))
    fixed = build_model("unet", input_shape=(48, 48, 1), base_filters=4, depth=3)   # static shapes, same answer
    assert [s for _, s in coarser_maps(fixed, feature_tensor(fixed), 3)] == [2, 4]

    ex = as_extractor(unet, levels=3)
    assert ex.strides == [1, 2, 4] and ex.n_features == 4 + 8 + 16
    x = np.random.default_rng(0).random((1, 32, 40, 1)).astype("float32")
    got = np.asarray(keras.Model(unet.inputs[0], ex.features)(x))
    assert got.shape == (1, 32, 40, 28)
    parts = keras.Model(unet.inputs[0], [unet.get_layer(n).output for n in ("dec0_b_relu", "dec1_b_relu")])(x)
    np.testing.assert_allclose(got[..., :4], np.asarray(parts[0]), atol=1e-6)
    up = keras.layers.UpSampling2D(2, interpolation="bilinear")(parts[1])
    np.testing.assert_allclose(got[..., 4:12], np.asarray(up), atol=1e-6)
    assert as_extractor(unet).n_features == 4                   # 1 level: the last block only (the paper's)

    msd = build_model("msd", input_shape=(None, None, 1), depth=3)   # all maps at full resolution: nothing coarser
    assert as_extractor(msd, levels=3).strides == [1]
    with pytest.raises(ValueError, match="feature levels must be >= 1"):
        as_extractor(unet, levels=0)


def test_a_model_without_a_1x1_classifier_is_not_an_extractor():
    x = keras.Input((16, 16, 1))
    classifier = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="clf.keras: not a segmentation model"):
        feature_tensor(classifier, "clf.keras")
    conv3 = keras.Model(x, keras.layers.Conv2D(1, 3, padding="same")(x))
    with pytest.raises(ValueError, match="no final 1×1 Conv2D"):
        feature_tensor(conv3, "c.keras")


def test_tiled_features_match_whole_image_features_away_from_the_border():
    model = build_model("msd", input_shape=(None, None, 1), depth=3)        # receptive radius 1 + 2 + 3 = 6 px
    features = keras.Model(model.inputs[0], feature_tensor(model))
    image = np.random.default_rng(0).random((70, 90, 1)).astype("float32")
    whole = np.asarray(features.predict_on_batch(image[None]))[0]
    rows, cols = np.mgrid[8:62:3, 8:82:5]
    got = gather_features(features.predict_on_batch, image, rows.ravel(), cols.ravel(), TileGrid(64), batch_size=3)
    np.testing.assert_allclose(got, whole[rows.ravel(), cols.ravel()], rtol=1e-5, atol=1e-5)


def test_pixel_sample_is_balanced_capped_and_weighted_to_the_image_counts():
    mask = np.zeros((50, 40), np.uint8)
    mask[10:20, 5:15] = 1                                                    # 100 fg, 1900 bg
    rows, cols, labels, weights = sample_pixels(mask, 60, np.random.default_rng(0))
    assert (labels == 1).sum() == 60 and (labels == 0).sum() == 60
    assert (mask[rows, cols] == labels).all() and len(set(zip(rows, cols))) == 120
    assert weights[labels == 1].sum() == pytest.approx(100) and weights[labels == 0].sum() == pytest.approx(1900)


def test_feature_tiles_per_image_shrink_beyond_five_shots_but_not_below_four():
    assert default_max_tiles(128) == 8 and default_max_tiles(256) == 4
    assert [default_max_tiles(128, k) for k in (1, 3, 5, 7, 10, 40)] == [8, 8, 8, 6, 4, 4]
    assert default_max_tiles(256, 10) == 4 and default_max_tiles(64, 10) == 16


def test_tile_cap_keeps_foreground_tiles_and_unbiased_weights():
    mask = np.zeros((240, 240), np.uint8)
    mask[20:30, 20:30] = mask[200:215, 100:130] = 1                          # sparse: 550 fg px in 2 of 100 tiles
    grid = TileGrid(32)                                                       # core 24 px: 10 × 10 tiles
    estimates = []
    for seed in range(1000):
        rows, cols, labels, weights = sample_pixels(mask, 200, np.random.default_rng(seed), grid, max_tiles=6)
        tiles = np.unique((rows // 24) * 10 + cols // 24)
        assert len(tiles) <= 6 and (labels == 1).sum() > 0                   # foreground tiles are always drawn
        estimates.append([weights[labels == 1].sum(), weights[labels == 0].sum()])
    np.testing.assert_allclose(np.mean(estimates, axis=0), [550, 240 * 240 - 550], rtol=0.07)  # ~4 std. errors


# -------------------------------------------------------------------------------------------------- solver
def test_solver_gradients_match_finite_differences():
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(0)
    z, y, s = rng.normal(size=(300, 6)), (rng.random(300) < 0.3).astype(float), rng.uniform(0.5, 2, 300)
    theta = rng.normal(size=7) * 0.3
    groups = rng.integers(0, 4, 300)
    centre = rng.normal(size=6)
    for loss, extra in ((solver.logistic_loss, ()), (solver.dice_loss, ()), (solver.dice_loss, (groups,)),
                        (solver.dice_loss, (groups, solver.DICE_EPS, centre))):
        numeric = approx_fprime(theta, lambda t: loss(t, z, y, s, 0.01, *extra)[0], 1e-7)
        np.testing.assert_allclose(loss(theta, z, y, s, 0.01, *extra)[1], numeric, atol=1e-5)


def test_per_image_dice_is_the_mean_of_each_images_dice():
    rng = np.random.default_rng(1)
    groups, theta = np.repeat([7, 2, 5, 9], 100), np.array([1.0, -0.5, 0.3, 0.1])
    z, s = rng.normal(size=(400, 3)), rng.uniform(0.5, 2, 400)
    y = (rng.random(400) < np.repeat([0.05, 0.3, 0.5, 0.8], 100)).astype(float)   # images of unequal foreground
    for fn in (solver.soft_dice, solver.hard_dice):
        each = [fn(theta, z[groups == g], y[groups == g], s[groups == g]) for g in (2, 5, 7, 9)]
        assert fn(theta, z, y, s, groups) == pytest.approx(np.mean(each), rel=1e-9)
        assert fn(theta, z, y, s) != pytest.approx(np.mean(each), rel=1e-3)          # pooled is another number
    loss, _ = solver.dice_loss(theta, z, y, s, 0.0, groups)
    assert loss == pytest.approx(1 - solver.soft_dice(theta, z, y, s, groups), rel=1e-9)


def test_per_image_dice_penalises_false_positives_on_a_sparse_image():
    """Two images: a dense one (half foreground) and a sparse one (2 %) whose background looks like foreground
    along feature 1. Pooled Dice barely notices the sparse image's false positives; the per-image mean does."""
    rng = np.random.default_rng(0)
    n = 4000
    y = np.r_[(rng.random(n) < 0.5), (rng.random(n) < 0.02)].astype(float)
    g = np.repeat([0, 1], n)
    x = rng.normal(size=(2 * n, 2)) + y[:, None] * 2.5
    x[n:, 1] += 2.0 * (1 - y[n:])                                        # the sparse image's confusing background
    fits = {avg: solver.solve(x, y, np.ones(2 * n), g, lambdas=(1e-4,), dice_average=avg) for avg in ("image", "pooled")}
    sparse = g == 1
    fp = {avg: float(((solver._logits(sol.theta_bfgs, sol.standardization.apply(x[sparse])) > 0) & (y[sparse] == 0)).sum())
          for avg, sol in fits.items()}
    assert fp["image"] < 0.5 * fp["pooled"]
    assert solver.hard_dice(fits["image"].theta_bfgs, fits["image"].standardization.apply(x), y, np.ones(2 * n), g) \
        > solver.hard_dice(fits["pooled"].theta_bfgs, fits["pooled"].standardization.apply(x), y, np.ones(2 * n), g)
    assert fits["image"].dice_average == "image"
    with pytest.raises(ValueError, match="dice_average"):
        solver.solve(x, y, np.ones(2 * n), g, dice_average="mean")


def _imbalanced_problem(seed=0, n=6000):
    """Rare foreground (5 %) overlapping the background: a calibrated logistic model under-predicts it at p > 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(float)
    x = rng.normal(size=(n, 4)) + y[:, None] * np.array([1.6, 1.2, 0.0, 0.0])
    return x * np.array([3.0, 0.5, 1.0, 7.0]) + np.array([10.0, -2.0, 0.0, 5.0]), y


def test_bfgs_on_dice_improves_on_logistic_regression_and_weights_fold_exactly():
    x, y = _imbalanced_problem()
    groups = np.arange(len(y)) % 3
    sol = solver.solve(x, y, np.ones(len(y)), groups, seed=0)
    assert sol.dice_bfgs > sol.dice_logistic + 0.01 and sol.soft_dice_bfgs > sol.soft_dice_logistic
    assert sol.chosen == "bfgs" and sol.lam in solver.DEFAULT_LAMBDAS
    assert sorted(sol.lambda_scores) == sorted(solver.DEFAULT_LAMBDAS)
    kernel, bias = sol.kernel_bias()                                          # standardisation folded in
    z = sol.standardization.apply(x)
    np.testing.assert_allclose(x @ kernel + bias, z @ sol.theta[:-1] + sol.theta[-1], atol=1e-8)


def test_dice_step_anchored_on_the_logistic_weights_stays_nearer_them():
    """The penalty centred on the logistic weights: with a strong λ the Dice step barely leaves them; with the
    paper's centre (0) the same λ pulls the weights toward zero instead."""
    x, y = _imbalanced_problem(seed=1)
    groups = np.arange(len(y)) % 3
    z = solver.standardization(x, np.ones(len(y))).apply(x)
    s = np.ones(len(y))
    start = solver.fit_logistic(z, y, s, 1e-3)
    moved = {}
    for anchor, lam in (("logistic", 1.0), ("logistic", 1e-5), ("zero", 1.0)):
        theta, _ = solver.fit_dice(z, y, s, lam, start, groups, anchor)
        moved[anchor, lam] = float(np.linalg.norm(theta[:-1] - start[:-1]))
    assert moved["logistic", 1.0] < 0.5 * moved["logistic", 1e-5]
    assert moved["logistic", 1.0] < 0.5 * moved["zero", 1.0]
    sol = solver.solve(x, y, s, groups, seed=0, dice_anchor="logistic")
    assert sol.dice_anchor == "logistic" and sol.dice_bfgs >= sol.dice_logistic - 1e-9
    with pytest.raises(ValueError, match="dice_anchor must be one of zero, logistic"):
        solver.solve(x, y, s, groups, dice_anchor="origin")


def test_lambda_is_chosen_on_held_out_images():
    groups = np.repeat(np.arange(4), 10)
    held = solver.holdout_mask(groups, seed=0)
    assert held.sum() == 10 and len(np.unique(groups[held])) == 1             # one whole image of four
    single = solver.holdout_mask(np.zeros(1000, int), seed=0)
    assert 150 < single.sum() < 350                                           # one image: a quarter of its pixels


def test_lambda_search_gives_the_same_scores_on_one_core_and_on_several(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2400, 8))
    y = (x[:, 0] - 0.7 * x[:, 1] + 0.6 * rng.normal(size=2400) > 0.4).astype(float)
    s, groups = rng.uniform(0.5, 2.0, 2400), np.repeat(np.arange(4), 600)
    solutions = []
    for cores in (1, 3):
        monkeypatch.setattr(solver, "usable_cores", lambda cores=cores: cores)
        solutions.append(solver.solve(x, y, s, groups, (1e-4, 1e-2, 1e-1, 1.0), seed=1))
    one, several = solutions
    assert list(one.lambda_scores) == [1e-4, 1e-2, 1e-1, 1.0]                  # every candidate, in order
    assert one.lambda_scores == several.lambda_scores and one.lam == several.lam
    np.testing.assert_array_equal(one.theta_bfgs, several.theta_bfgs)
    assert len(set(one.lambda_scores.values())) > 1                            # the candidates really differ
    assert solver.usable_cores() >= 1


def test_lambda_search_without_foreground_outside_the_held_out_image_takes_the_largest_lambda():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(4), 300)
    held = solver.holdout_mask(groups, seed=2)
    x = rng.normal(size=(1200, 5))
    y = (held & (x[:, 0] > 0)).astype(float)          # foreground only in the held-out image
    result = solver.solve(x, y, np.ones(1200), groups, (1e-3, 1e-1), seed=2)
    assert all(np.isnan(v) for v in result.lambda_scores.values()) and result.lam == 1e-1
    assert np.isfinite(result.theta_bfgs).all()


# ------------------------------------------------------------------------------------------- image filters
def test_image_filters_match_scipy_and_survive_a_keras_round_trip(tmp_path):
    from scipy import ndimage as ndi

    from cellseg_tf.models.layers import FILTER_TRUNCATE, ImageFilters

    rng = np.random.default_rng(0)
    image = ndi.gaussian_filter(rng.random((1, 60, 76, 2)), (0, 1.5, 1.5, 0)).astype("float32")
    layer = ImageFilters((1.0, 2.5))
    out = np.asarray(layer(image))
    assert out.shape == (1, 60, 76, 2 * 11) == layer.compute_output_shape(image.shape)
    for c in range(2):
        x = image[0, ..., c].astype(np.float64)
        got = out[0, ..., 11 * c:11 * (c + 1)]
        np.testing.assert_array_equal(got[..., 0], image[0, ..., c])
        for i, sigma in enumerate((1.0, 2.5)):
            def g(order=(0, 0), im=x):
                return ndi.gaussian_filter(im, sigma, order=order, truncate=FILTER_TRUNCATE, mode="mirror")
            mean, ixx, iyy, ixy = g(), g((0, 2)), g((2, 0)), g((1, 1))
            root = np.sqrt(((ixx - iyy) / 2) ** 2 + ixy ** 2)
            want = [mean, np.sqrt(np.maximum(g(im=x * x) - mean ** 2, 0)), sigma * np.hypot(g((0, 1)), g((1, 0))),
                    sigma ** 2 * ((ixx + iyy) / 2 + root), sigma ** 2 * ((ixx + iyy) / 2 - root)]
            for j, w in enumerate(want):
                np.testing.assert_allclose(got[..., 1 + 5 * i + j], w, atol=2e-5 * sigma ** 2 + 1e-5,
                                           err_msg=f"{ImageFilters.FEATURES[j]} at sigma {sigma}")
    x = keras.Input((None, None, 2))
    model = keras.Model(x, ImageFilters((1.0, 2.5), name="f")(x))
    model.save(tmp_path / "f.keras")
    loaded = keras.models.load_model(tmp_path / "f.keras", safe_mode=True)
    assert loaded.get_layer("f").sigmas == (1.0, 2.5) and not loaded.weights
    np.testing.assert_array_equal(np.asarray(loaded(image)), out)
    with pytest.raises(ValueError, match="positive"):
        ImageFilters((0.0,))


def test_adaptation_with_image_filters_adds_their_features_and_round_trips(fs, tmp_path):
    out = tmp_path / "filters.keras"
    result = adapt(_config(fs, out, filter_sigmas=[1.0, 2.0]))
    report = result.report
    assert report["sampled"]["features"] == 4 + 5 + 11 and report["image_filters"] == {"sigmas": [1.0, 2.0],
                                                                                       "features": 11}
    loaded = keras.models.load_model(out, safe_mode=True)
    assert len(loaded.trainable_weights) == 2 and head_weights(loaded)[0].shape == (20,)
    x = np.random.default_rng(1).random((1, 48, 48, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(result.model(x)))
    with pytest.raises(ValueError, match="filter sigma 20 is too large for 48-px feature tiles"):
        adapt(_config(fs, tmp_path / "big.keras", filter_sigmas=[20.0]))
    with pytest.raises(ValueError, match="filter sigmas must be positive"):
        adapt(_config(fs, tmp_path / "neg.keras", filter_sigmas=[-1.0]))
    assert not (tmp_path / "big.keras").exists() and not (tmp_path / "neg.keras").exists()


def test_default_image_filters_are_the_package_scales_that_fit_the_feature_tile(fs, tmp_path):
    largest = max(DEFAULT_FILTER_SIGMAS)                   # 16: kernel radius 48 px
    assert default_filter_sigmas(128) == list(DEFAULT_FILTER_SIGMAS)
    assert largest not in default_filter_sigmas(48) and default_filter_sigmas(48) == list(DEFAULT_FILTER_SIGMAS[:-1])
    result = adapt(_config(fs, tmp_path / "default.keras", shots=2), save=False)    # the fixture's tiles: 48 px
    assert result.report["image_filters"]["sigmas"] == default_filter_sigmas(48)
    assert result.report["config"]["filter_sigmas"] is None
    with pytest.raises(ValueError, match=f"filter sigma {largest:g} is too large for 48-px feature tiles"):
        adapt(_config(fs, tmp_path / "given.keras", filter_sigmas=list(DEFAULT_FILTER_SIGMAS)))   # given: must fit
    assert not (tmp_path / "given.keras").exists()


def test_adaptation_with_feature_levels_reads_the_coarser_maps_and_round_trips(fs, tmp_path):
    out = tmp_path / "levels.keras"
    result = adapt(_config(fs, out, feature_levels=2, filter_sigmas=[]))
    report = result.report
    assert [e["strides"] for e in report["extractors"]] == [[1, 2], [1]]   # the U-Net's decoder at stride 2; MSD
    assert [e["features"] for e in report["extractors"]] == [4 + 8, 5] and report["sampled"]["features"] == 17
    assert report["config"]["feature_levels"] == 2
    loaded = keras.models.load_model(out, safe_mode=True)
    assert len(loaded.trainable_weights) == 2 and head_weights(loaded)[0].shape == (17,)
    x = np.random.default_rng(2).random((1, 48, 48, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(result.model(x)))
    with pytest.raises(ValueError, match="feature_levels must be >= 1"):
        adapt(_config(fs, tmp_path / "zero.keras", feature_levels=0))
    assert not (tmp_path / "zero.keras").exists()


# ------------------------------------------------------------------------------------------- adapted model
def test_adapted_model_round_trips_and_holds_the_solvers_weights(fs, tmp_path):
    out = tmp_path / "adapted.keras"
    result = adapt(_config(fs, out))
    loaded = keras.models.load_model(out, safe_mode=True)                    # registered objects only
    kernel, bias = result.solution.kernel_bias()
    got_kernel, got_bias = head_weights(loaded)
    np.testing.assert_array_equal(got_kernel, kernel.astype(np.float32))
    assert got_bias == pytest.approx(bias, rel=1e-6)
    assert loaded.output.dtype == "float32" and target_kind(loaded) == "binary"
    assert len(loaded.trainable_weights) == 2                                 # only the 1×1 conv (W, b)

    x = np.random.default_rng(0).random((2, 48, 48, 1)).astype("float32")
    prob = np.asarray(loaded(x))
    np.testing.assert_array_equal(prob, np.asarray(result.model(x)))
    feats = np.asarray(keras.Model(loaded.inputs[0], loaded.get_layer("features").output)(x))
    np.testing.assert_allclose(prob[..., 0], 1 / (1 + np.exp(-(feats @ kernel + bias))), atol=1e-5)
    for i, path in enumerate(fs.extractors):                                  # extractors frozen, weights kept
        original = keras.models.load_model(path)
        kept = [w for w in original.weights if not w.path.startswith("head_")]
        sub = loaded.get_layer(f"extractor{i}_{original.name}")
        assert [w.path for w in sub.weights] == [w.path for w in kept]
        for a, b in zip(sub.weights, kept):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    report = yaml.safe_load(report_path(out).read_text())
    assert report == result.report and report["shots"] == 3 and report["train_rows_available"] == 4
    assert report["sampled"]["features"] == 4 + 5 + 1 + 5 * len(default_filter_sigmas(48))   # + the image filters
    assert report["seconds"]["total"] > 0
    assert report["lambda"] in solver.DEFAULT_LAMBDAS
    assert report["support_dice"]["bfgs"] >= report["support_dice"]["logistic"]


def test_adapted_model_normalises_like_its_extractors_and_says_so_inside(fs, tmp_path):
    from cellseg_tf.models.metadata import describe, model_info
    from cellseg_tf.predict.options import saved_normalization

    model = keras.models.load_model(fs.extractors[1])
    describe(model, channels=1, norm_low=1.0, norm_high=99.5)                 # trained with other percentiles
    extractor = tmp_path / "run" / "msd_p1.keras"
    extractor.parent.mkdir()
    model.save(extractor)
    out = tmp_path / "copied" / "adapted.keras"
    result = adapt(_config(fs, out, extractors=[str(extractor)], shots=2))
    assert (result.report["norm_low"], result.report["norm_high"]) == (1.0, 99.5)
    assert saved_normalization(out) == (1.0, 99.5)                          # what `predict` will use
    info = model_info(keras.models.load_model(out))
    assert info["channels"] == 1 and info["target"] == "binary"
    other = keras.models.load_model(fs.extractors[0])
    describe(other, channels=1, norm_low=2.0, norm_high=98.0)
    other.save(tmp_path / "unet_p2.keras")
    with pytest.raises(ValueError, match="different normalisation percentiles"):
        adapt(_config(fs, tmp_path / "mixed.keras", extractors=[str(extractor), str(tmp_path / "unet_p2.keras")]))
    assert not (tmp_path / "mixed.keras").exists()


def test_adaptation_is_seeded(fs, tmp_path):
    a = adapt(_config(fs, tmp_path / "a.keras", shots=2, seed=5), save=False)
    b = adapt(_config(fs, tmp_path / "b.keras", shots=2, seed=5), save=False)
    assert a.report["support_rows"] == b.report["support_rows"] and a.report["lambda"] == b.report["lambda"]
    np.testing.assert_array_equal(head_weights(a.model)[0], head_weights(b.model)[0])
    draws = {tuple(s.row for s in draw_support(fs.manifest, 2, seed)[0]) for seed in range(6)}
    assert len(draws) > 1
    assert not (tmp_path / "a.keras").exists()                                # save=False writes nothing


def test_cli_adapt_then_predict_and_evaluate_unchanged(fs, tmp_path, capsys):
    from cellseg_tf.cli import main

    out = tmp_path / "new" / "adapted.keras"
    assert main(["adapt", "--extractor", fs.extractors[0], "--extractor", fs.extractors[1], "--support",
                 str(fs.manifest), "--shots", "2", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"adapted={out}" in printed and "support_dice_bfgs=" in printed
    assert report_path(out).is_file()
    report = yaml.safe_load(report_path(out).read_text())
    assert report["image_filters"]["sigmas"] == default_filter_sigmas(48) and report["dice_average"] == "image"
    assert report["dice_anchor"] == "zero"
    assert report["config"]["feature_levels"] == 1
    filtered = tmp_path / "new" / "filtered.keras"
    assert main(["adapt", "--extractor", fs.extractors[0], "--support", str(fs.manifest), "--shots", "2",
                 "--out", str(filtered), "--filter-sigmas", "1,3", "--dice-average", "pooled",
                 "--feature-levels", "2", "--dice-anchor", "logistic", "--quiet"]) == 0
    report = yaml.safe_load(report_path(filtered).read_text())
    assert report["image_filters"] == {"sigmas": [1.0, 3.0], "features": 11} and report["dice_average"] == "pooled"
    assert report["dice_anchor"] == "logistic" and "W_logistic" in report["optimizers"]["bfgs"]
    assert report["extractors"][0]["strides"] == [1, 2]
    assert main(["adapt", "--extractor", fs.extractors[1], "--support", str(fs.manifest), "--out",
                 str(tmp_path / "bad" / "a.keras"), "--dice-average", "mean", "--quiet"]) == 2
    assert "dice_average must be one of image, pooled" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["adapt", "--extractor", fs.extractors[1], "--support", str(fs.manifest), "--out", str(filtered),
              "--filter-sigmas", "one"])
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(out), "--model", fs.extractors[0], "--input", str(fs.manifest),
                 "--split", "test", "--out", str(pred), "--no-progress"]) == 0      # in an ensemble, too
    assert main(["evaluate", "--pred", str(pred), "--manifest", str(fs.manifest), "--out",
                 str(tmp_path / "report.csv"), "--quiet"]) == 0
    assert "mean_dice=" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- bad input
def _manifest_variant(fs, tmp_path, name, change) -> Path:
    rows = [{"image": s.image, "mask": s.mask, "split": s.split} for s in open_manifest(fs.manifest)]
    return write_manifest(tmp_path / name / "manifest.csv", change(rows, tmp_path / name))


def _empty_mask_row(rows, folder):
    empty = write_png(folder / "empty.png", np.zeros((96, 96), np.uint8))
    return [{**rows[0], "mask": str(empty)}] + rows[1:]


@pytest.mark.parametrize("case", ["no_train_rows", "too_many_shots", "no_foreground", "channels", "size",
                                  "not_segmentation", "not_keras"])
def test_bad_input_is_a_clear_error_naming_the_file_and_writes_nothing(fs, tmp_path, case):
    extractors, support, shots = list(fs.extractors), str(fs.manifest), 2
    if case == "no_train_rows":
        support = str(_manifest_variant(fs, tmp_path, "test_only",
                                        lambda rows, _: [{**r, "split": "test"} for r in rows]))
        match = f"{support}: no split=train rows"
    elif case == "too_many_shots":
        shots, match = 9, f"{support}: 9 shots asked for but the manifest has only 4 train"
    elif case == "no_foreground":
        support, shots = str(_manifest_variant(fs, tmp_path, "empty", _empty_mask_row)), None
        match = "empty.png: support row 2 .* has no foreground"
    else:
        bad = tmp_path / f"{case}.keras"
        if case == "channels":
            build_model("msd", input_shape=(None, None, 3), depth=2).save(bad)
            match = f"{bad}: takes 3-channel images"
        elif case == "size":
            build_model("unet", input_shape=(64, 64, 1), base_filters=4, depth=2).save(bad)
            match = f"{bad}: input size 64×64 differs from"
        elif case == "not_segmentation":
            x = keras.Input((32, 32, 1))
            keras.Model(x, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))).save(bad)
            match = f"{bad}: not a segmentation model"
        else:
            bad.write_text("not a model")
            match = f"{bad}: cannot load Keras model"
        extractors.append(str(bad))
    out = tmp_path / "out" / "adapted.keras"
    with pytest.raises(ValueError, match=match):
        adapt(AdaptConfig(extractors=extractors, support=support, shots=shots, out=str(out), verbose=0))
    assert not out.parent.exists() or not any(out.parent.iterdir())
