"""Voter arithmetic (soft/hard, groups, weights, per-model thresholds) and TTA invertibility."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cellseg_tf.predict.ensemble import binarize, member_weights, model_group, tta_forward, tta_inverse, vote
from cellseg_tf.predict.options import TTA_MODES, PredictOptions

P = 32


def constant_model(p: float, size: int | None = P, name: str = "const", channels: int = 1):
    """A model whose output is the constant probability `p` everywhere (1×1 conv with zero kernel, bias logit p)."""
    import keras

    inp = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(1, 1, kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant(math.log(p / (1 - p))))(inp)
    return keras.Model(inp, keras.layers.Activation("sigmoid", dtype="float32")(x), name=name)


def test_groups_and_weights():
    paths = ["runs/a/z_model1.keras", "z_b.keras", "best.keras", "runs/z_dir/m.keras"]
    assert [model_group(p) for p in paths] == ["z", "z", "standard", "standard"]
    np.testing.assert_allclose(member_weights(paths), [0.25] * 4)
    np.testing.assert_allclose(member_weights(paths, {"z": 2.0}), [2 / 6, 2 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(member_weights(paths, {"z": 0.0}, [1, 1, 3, 1]), [0, 0, 0.75, 0.25])
    with pytest.raises(ValueError, match="unknown model group"):
        member_weights(paths, {"zz": 1.0})
    with pytest.raises(ValueError, match="not all 0"):
        member_weights(paths, {"z": 0.0, "standard": 0.0})


def test_vote_arithmetic_numpy():
    probs = np.array([[0.9, 0.2], [0.6, 0.45], [0.1, 0.7]], np.float32)[:, None, :]  # (M=3, 1, 2)
    np.testing.assert_allclose(vote(probs)[0], [1.6 / 3, 1.35 / 3], rtol=1e-6)
    np.testing.assert_allclose(vote(probs, [2, 1, 1])[0], [(1.8 + 0.6 + 0.1) / 4, (0.4 + 0.45 + 0.7) / 4], rtol=1e-6)
    hard = vote(probs, mode="hard")[0]
    np.testing.assert_allclose(hard, [2 / 3, 1 / 3], rtol=1e-6)
    assert binarize(hard, "hard").tolist() == [True, False]
    # per-model thresholds move single votes: model 2 now says yes at 0.45
    np.testing.assert_allclose(vote(probs, mode="hard", thresholds=[0.5, 0.4, 0.5])[0], [2 / 3, 2 / 3], rtol=1e-6)
    # a 50/50 weighted tie is background (strict majority)
    assert not binarize(vote(probs[:2, :, :1] * [[[1]], [[0]]], mode="hard"), "hard").any()
    assert binarize(np.float32([0.5, 0.51]), "soft", 0.5).tolist() == [False, True]


def test_tile_fn_matches_reference_vote(tmp_path):
    """The compiled ensemble, loaded from files with z_ groups, votes exactly like the numpy reference."""
    from cellseg_tf.predict.inference import Predictor

    ps = [0.9, 0.3, 0.6, 0.2]
    names = ["z_a.keras", "z_b.keras", "c.keras", "d.keras"]
    for p, n in zip(ps, names):
        constant_model(p).save(tmp_path / n)
    paths = [tmp_path / n for n in names]
    image = np.random.default_rng(0).random((40, 50, 1)).astype(np.float32)
    probs = np.array(ps, np.float32)[:, None]
    soft = Predictor.from_files(paths, PredictOptions(group_weights={"z": 3.0}))
    expect = vote(probs, member_weights(paths, {"z": 3.0}))[0]
    np.testing.assert_allclose(soft.predict_normalized(image), expect, atol=1e-5)
    hard = Predictor.from_files(paths, PredictOptions(vote="hard", model_thresholds=[0.5, 0.5, 0.65, 0.1]))
    expect_hard = vote(probs, None, "hard", thresholds=[0.5, 0.5, 0.65, 0.1])[0]  # 0.9>0.5, 0.2>0.1 -> 0.5
    np.testing.assert_allclose(hard.predict_normalized(image), expect_hard, atol=1e-6)
    assert expect_hard == pytest.approx(0.5) and not hard.binarize(hard.predict_normalized(image)).any()
    again = Predictor(hard.models, hard.options, weights=hard.weights)  # resolved options rebuild the same predictor
    assert again.options == hard.options and again.options.patch_size == P
    np.testing.assert_array_equal(again.predict_normalized(image), hard.predict_normalized(image))


@pytest.mark.parametrize("mode", list(TTA_MODES))
def test_tta_transforms_are_invertible(mode):
    x = np.random.default_rng(1).random((2, 8, 8, 3)).astype(np.float32)
    seen = set()
    for k, flip in TTA_MODES[mode]:
        fwd = np.asarray(tta_forward(x, k, flip))
        np.testing.assert_array_equal(np.asarray(tta_inverse(fwd, k, flip)), x)
        np.testing.assert_array_equal(np.asarray(tta_inverse(fwd[..., 0], k, flip)), x[..., 0])
        seen.add(fwd.tobytes())
    assert len(seen) == len(TTA_MODES[mode])  # all transforms distinct


def test_tta_prediction_is_mean_of_inverted_predictions():
    """TTA output == mean over transforms of inverse(model(transform(tile))), for a non-symmetric model."""
    import keras

    from cellseg_tf.predict.inference import Predictor

    keras.utils.set_random_seed(3)
    inp = keras.Input((P, P, 1))
    x = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer="random_normal", bias_initializer="ones")(inp)
    model = keras.Model(inp, keras.layers.Activation("sigmoid")(x))
    image = np.random.default_rng(2).random((P, P, 1)).astype(np.float32)
    manual = []
    for k, flip in TTA_MODES["d4"]:
        t = np.rot90(image[:, ::-1] if flip else image, k)
        y = np.asarray(model(t[None]))[0, ..., 0]
        y = np.rot90(y, -k)
        manual.append(y[:, ::-1] if flip else y)
    with_tta = Predictor([model], PredictOptions(tiling="grid", tta="d4")).predict_normalized(image)
    without = Predictor([model], PredictOptions(tiling="grid")).predict_normalized(image)
    np.testing.assert_allclose(with_tta, np.mean(manual, axis=0), atol=1e-5)
    assert np.abs(with_tta - without).max() > 1e-3  # the model is not symmetric, so TTA did change something


def test_rejects_incompatible_members():
    from cellseg_tf.predict.inference import Predictor

    with pytest.raises(ValueError, match=r"different tile sizes.*32 px.*64 px"):
        Predictor([constant_model(0.5, 32, "a"), constant_model(0.5, 64, "b")])
    with pytest.raises(ValueError, match="patch_size=64"):
        Predictor([constant_model(0.5, 32)], PredictOptions(patch_size=64))
    with pytest.raises(ValueError, match="same number of channels, got grey: 1; rgb: 3"):
        Predictor([constant_model(0.5, 32, "grey"), constant_model(0.5, 32, "rgb", channels=3)])
    rgb = Predictor([constant_model(0.5, 32, "rgb", channels=3)])
    with pytest.raises(ValueError, match=r"models expect \(H, W, 3\)"):
        rgb.predict_normalized(np.zeros((40, 40, 1), np.float32))
    with pytest.raises(ValueError, match="vote must be"):
        Predictor([constant_model(0.5)], PredictOptions(vote="median"))
    with pytest.raises(ValueError, match="got 2 per-model thresholds for 1 models"):
        Predictor([constant_model(0.5)], PredictOptions(vote="hard", model_thresholds=[0.5, 0.5]))
    with pytest.raises(ValueError, match="hard vote only"):
        Predictor([constant_model(0.5)], PredictOptions(model_thresholds=[0.5]))
    for field, value in (("tiling", "hex"), ("tta", "d8"), ("precision", "half")):
        with pytest.raises(ValueError, match=f"{field} must be one of"):
            PredictOptions(**{field: value}).validate()
