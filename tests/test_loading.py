"""models/loading: models from elsewhere join the ensemble (checked, a 2-class softmax adapted) or are refused by name."""
from __future__ import annotations

import re

import numpy as np
import pytest

from cellseg_tf.predict.inference import Predictor
from cellseg_tf.predict.options import PredictOptions


def plain_unet(size: int | None = 32, channels: int = 1, head: str = "sigmoid", seed: int = 0):
    """A small U-Net written with plain Keras layers only (no cellseg_tf): two levels, 'same' padding.

    head: "sigmoid" (1 channel), "softmax" (2 classes), "softmax3", "linear" (logits), "sigmoid2" (2 channels).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels))
    c1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    c2 = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.MaxPooling2D()(c1))
    up = layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(c2), c1])
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(up)
    k, activation = {"sigmoid": (1, "sigmoid"), "softmax": (2, "softmax"), "softmax3": (3, "softmax"),
                     "linear": (1, None), "sigmoid2": (2, "sigmoid")}[head]
    out = layers.Conv2D(k, 1, activation=activation, bias_initializer=keras.initializers.Constant(0.3))(x)
    return keras.Model(inp, out, name=f"plain_unet_{head}")


def test_a_plain_keras_unet_votes_with_a_package_model(tmp_path):
    from cellseg_tf.models import build_model
    from cellseg_tf.models.metadata import describe

    ours = build_model("unet", (32, 32, 1), base_filters=4, depth=2)
    describe(ours, norm_low=1.0, norm_high=99.5)
    ours_path, foreign_path = tmp_path / "run" / "best.keras", tmp_path / "downloads" / "their_unet.keras"
    ours_path.parent.mkdir()
    foreign_path.parent.mkdir()
    ours.save(ours_path)
    plain_unet(32).save(foreign_path)
    image = (np.random.default_rng(3).random((80, 70)) * 3000 + 100).astype(np.uint16)

    pair = Predictor.from_files([ours_path, foreign_path])
    assert pair.patch_size == 32                                     # the fixed-size models are tiled at their size
    assert pair.options.normalization() == (1.0, 99.5)              # from the package model's checkpoint
    same = PredictOptions(norm_low=1.0, norm_high=99.5)
    a = Predictor.from_files([ours_path], same).predict_image(image)
    b = Predictor.from_files([foreign_path], same).predict_image(image)
    assert np.abs(a - b).max() > 1e-3                                # two different voters (untrained: close maps)
    np.testing.assert_allclose(pair.predict_image(image), (a + b) / 2, atol=1e-6)


def test_a_two_class_softmax_model_votes_with_its_foreground_probability(tmp_path):
    import keras

    from cellseg_tf.models.loading import load_segmentation_models

    model = plain_unet(None, head="softmax")
    path = tmp_path / "softmax.keras"
    model.save(path)
    member, = load_segmentation_models([path])
    assert tuple(member.outputs[0].shape) == (None, None, None, 1)
    x = np.random.default_rng(0).random((1, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(member(x)), np.asarray(model(x))[..., 1:2], atol=1e-6)
    pred = Predictor.from_files([path], PredictOptions(patch_size=32, tiling="grid"))
    np.testing.assert_allclose(pred.predict_normalized(x[0]), np.asarray(model(x))[0, ..., 1], atol=1e-6)
    assert isinstance(keras.Model.from_config(member.get_config()), keras.Model)   # the adapter is serialisable


def _classifier(tmp_path):
    import keras

    x = keras.Input((32, 32, 1))
    return keras.Model(x, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))


def _two_outputs(tmp_path):
    import keras

    x = keras.Input((32, 32, 1))
    y = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(x, [y, y])


def _shrinking(tmp_path):
    import keras

    x = keras.Input((32, 32, 1))
    return keras.Model(x, keras.layers.Conv2D(1, 3, activation="sigmoid")(x))      # 'valid': 30×30 out


REFUSED = {
    "classifier": (_classifier, r"output shape \(3,\) is not a per-pixel map .*not a segmentation model"),
    "two_outputs": (_two_outputs, r"has 1 input\(s\) and 2 output\(s\)"),
    "shrinking": (_shrinking, "output height 30 differs from its input height 32"),
    "two_channel_input": (lambda p: plain_unet(32, channels=2), r"takes inputs of shape \(32, 32, 2\)"),
    "logits": (lambda p: plain_unet(32, head="linear"), r"its output has no activation \(logits"),
    "three_classes": (lambda p: plain_unet(32, head="softmax3"), "a 3-channel softmax output"),
    "two_sigmoids": (lambda p: plain_unet(32, head="sigmoid2"), "a 2-channel sigmoid output"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_models_that_cannot_vote_are_refused_naming_the_file(tmp_path, case):
    build, message = REFUSED[case]
    path = tmp_path / f"{case}.keras"
    build(tmp_path).save(path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        Predictor.from_files([path])


def test_members_must_take_the_same_channels(tmp_path):
    from cellseg_tf.models import build_model

    grey, rgb = tmp_path / "grey.keras", tmp_path / "rgb.keras"
    build_model("unet", (32, 32, 1), base_filters=4, depth=2).save(grey)
    plain_unet(32, channels=3).save(rgb)
    with pytest.raises(ValueError, match=f"same number of channels.*{re.escape(str(grey))}: 1; "
                                         f"{re.escape(str(rgb))}: 3"):
        Predictor.from_files([grey, rgb])


def test_a_last_layer_whose_activation_cannot_be_read_is_trusted_with_a_warning(tmp_path):
    import keras

    from cellseg_tf.models.loading import load_segmentation_models

    x = keras.Input((32, 32, 1))
    y = keras.layers.Identity()(keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    path = tmp_path / "identity_last.keras"
    keras.Model(x, y).save(path)
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ": cannot tell which activation"):
        member, = load_segmentation_models([path])
    assert tuple(member.outputs[0].shape) == (None, 32, 32, 1)
