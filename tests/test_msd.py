"""The mixed-scale dense network: dilations, dense connectivity, head, round trip, and `cellseg-tf train --model msd`."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cellseg_tf.models import available_models, build_model, model_stride, target_kind  # noqa: E402
from cellseg_tf.models.msd import msd_dilations  # noqa: E402


def test_dilations_cycle_one_to_ten():
    assert msd_dilations(25) == list(range(1, 11)) * 2 + [1, 2, 3, 4, 5]
    assert msd_dilations(4, max_dilation=2) == [1, 2, 1, 2]


def test_every_layer_sees_the_image_and_all_earlier_layers():
    depth, width = 12, 2
    model = build_model("msd", input_shape=(None, None, 3), depth=depth, width=width)
    assert "msd" in available_models() and model_stride("msd") == 1
    for i in range(depth):
        conv = model.get_layer(f"msd{i}_conv")
        assert conv.dilation_rate == (i % 10 + 1,) * 2 and conv.kernel_size == (3, 3)
        assert conv.kernel.shape == (3, 3, 3 + i * width, width)      # input channels: image + i earlier layers
    assert model.get_layer("features").output.shape[-1] == 3 + depth * width
    assert model.get_layer("head_logits").kernel.shape == (1, 1, 3 + depth * width, 1)


def test_output_is_float32_probabilities_at_full_resolution_any_size():
    model = build_model("msd", input_shape=(None, None, 1), depth=5)
    for shape in ((1, 40, 56, 1), (2, 33, 17, 1)):                      # stride 1: any size
        y = np.asarray(model(np.random.default_rng(0).random(shape).astype("float32")))
        assert y.shape == shape and y.dtype == np.float32 and ((y >= 0) & (y <= 1)).all()
    assert target_kind(model) == "binary"
    two = build_model("msd", input_shape=(32, 32, 1), depth=3, out_channels=2)
    assert two.output.shape == (None, 32, 32, 2) and target_kind(two) == "distance"
    with pytest.raises(ValueError, match="depth"):
        build_model("msd", depth=0)


def test_round_trip_safe_mode(tmp_path):
    model = build_model("msd", input_shape=(32, 32, 1), depth=11)
    path = tmp_path / "msd.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_cli_trains_an_msd(tiny_manifest, tmp_path):
    from cellseg_tf.cli import main

    run = tmp_path / "msd_run"
    rc = main(["train", "--manifest", str(tiny_manifest), "--out", str(run), "--model", "msd", "--epochs", "1",
               "--patch-size", "32", "--batch-size", "2", "--steps-per-epoch", "2", "--verbose", "0",
               "--set", "model_options={depth: 4}"])
    assert rc == 0
    import pandas as pd

    history = pd.read_csv(run / "history.csv")
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    model = keras.models.load_model(run / "best.keras", safe_mode=True)
    assert model.get_layer("msd3_conv").dilation_rate == (4, 4)
    untrained = build_model("msd", input_shape=(32, 32, 1), depth=4)
    assert model.count_params() == untrained.count_params()
