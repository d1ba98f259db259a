"""models/metadata: a `.keras` file carries what prediction needs, so a checkpoint copied alone predicts the same."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from cellseg_tf.models import build_model
from cellseg_tf.models.metadata import INFO_KEYS, checkpoint_info, describe, model_info


def _tiny(shape=(32, 32, 1), **options):
    return build_model("unet", shape, base_filters=4, depth=2, **options)


def test_info_survives_save_safe_mode_load_resave_and_float32_rebuild(tmp_path):
    import keras

    from cellseg_tf import __version__
    from cellseg_tf.models.loading import as_float32, load_models

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _tiny(target="distance")
    keras.mixed_precision.set_global_policy("float32")
    stored = describe(model, model="unet", channels=1, norm_low=1.5, norm_high=99.5, mask_threshold=127,
                      patch_size=32, version=__version__)
    assert stored == {"model": "unet", "channels": 1, "norm_low": 1.5, "norm_high": 99.5, "mask_threshold": 127.0,
                      "patch_size": 32, "target": "distance", "version": __version__}
    assert set(stored) == set(INFO_KEYS)
    path = tmp_path / "m.keras"
    model.save(path)
    assert checkpoint_info(path) == stored                          # read from the file, nothing built
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    assert model_info(loaded) == stored
    loaded.save(tmp_path / "again.keras")
    assert checkpoint_info(tmp_path / "again.keras") == stored
    as32, = load_models([path], precision="float32")
    assert as32 is not loaded and model_info(as_float32(loaded)) == stored == model_info(as32)


def test_describe_refuses_models_that_cannot_carry_it_and_unknown_keys():
    import keras

    inp = keras.Input((8, 8, 1))
    plain = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp), name="plain")
    with pytest.raises(ValueError, match="plain: its output is not a TargetHead"):
        describe(plain, norm_low=1.0)
    assert model_info(plain) == {}
    with pytest.raises(ValueError, match=r"unknown model info key\(s\) \['colour'\]"):
        describe(_tiny(), colour="red")
    with pytest.raises(ValueError, match="'norm_low' must be a number or a name"):
        describe(_tiny(), norm_low=[1, 2])


def test_checkpoint_info_of_models_without_it_is_empty_and_bad_files_are_named(tmp_path):
    import keras

    inp = keras.Input((8, 8, 1))
    keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp)).save(tmp_path / "foreign.keras")
    _tiny().save(tmp_path / "undescribed.keras")
    assert checkpoint_info(tmp_path / "foreign.keras") == {}
    assert checkpoint_info(tmp_path / "undescribed.keras") == {}
    (tmp_path / "junk.keras").write_text("not a zip")
    with pytest.raises(ValueError, match=r"junk.keras: not a Keras 3 .keras file"):
        checkpoint_info(tmp_path / "junk.keras")
    with pytest.raises(FileNotFoundError, match="gone.keras: model file not found"):
        checkpoint_info(tmp_path / "gone.keras")


def test_the_checkpoint_wins_over_config_yaml_which_wins_over_defaults(tmp_path):
    from cellseg_tf.predict.options import run_normalization
    from cellseg_tf.training.config import TrainConfig

    run = tmp_path / "run"
    TrainConfig(norm_low=1.0, norm_high=99.0).save(run / "config.yaml")
    described = _tiny()
    describe(described, norm_low=5.0, norm_high=95.0)
    described.save(run / "best.keras")
    _tiny().save(run / "old.keras")                       # saved before checkpoints described themselves
    _tiny().save(tmp_path / "loose.keras")
    assert run_normalization([run / "best.keras"]) == (5.0, 95.0)
    assert run_normalization([run / "old.keras"]) == (1.0, 99.0)
    assert run_normalization([tmp_path / "loose.keras"]) is None
    with pytest.raises(ValueError, match="different normalisation percentiles"):
        run_normalization([run / "best.keras", run / "old.keras"])


def test_training_checkpoints_describe_themselves_and_a_copy_alone_predicts_byte_identically(tmp_path,
                                                                                             tiny_manifest):
    import keras

    from cellseg_tf import __version__
    from cellseg_tf.data.io import open_manifest
    from cellseg_tf.models.heads import output_head
    from cellseg_tf.predict.batch_predict import predict_batch
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.options import BatchOptions, output_paths
    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.training.engine import train

    config = TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "run"), model="unet",
                         model_options={"base_filters": 4, "depth": 2}, epochs=1, steps_per_epoch=2, patch_size=32,
                         batch_size=4, norm_low=10.0, norm_high=90.0, mask_threshold=0.0, target="binary",
                         checkpoint_every_epoch=True, verbose=0)
    result = train(config)
    for ckpt in (result.best_model, result.last_model, result.run_dir / "epochs" / "epoch_001.keras"):
        info = checkpoint_info(ckpt)
        assert {k: info[k] for k in ("model", "channels", "norm_low", "norm_high", "mask_threshold", "patch_size",
                                     "target")} == {"model": "unet", "channels": 1, "norm_low": 10.0,
                                                    "norm_high": 90.0, "mask_threshold": 0.0, "patch_size": 32,
                                                    "target": "binary"}
        assert info["version"] == __version__

    alone = tmp_path / "elsewhere" / "model.keras"          # no config.yaml anywhere near it
    alone.parent.mkdir()
    shutil.copyfile(result.best_model, alone)
    image = open_manifest(tiny_manifest)[0].image
    options = BatchOptions(save_prob="npy", progress=False)
    for models, out in (([result.best_model], tmp_path / "in_run"), ([alone], tmp_path / "alone")):
        predict_batch([image], [str(m) for m in models], out, options)
    in_run, by_itself = output_paths(tmp_path / "in_run", image, "npy"), output_paths(tmp_path / "alone", image, "npy")
    assert in_run["mask"].read_bytes() == by_itself["mask"].read_bytes()
    assert in_run["prob"].read_bytes() == by_itself["prob"].read_bytes()
    assert Predictor.from_files([alone]).options.normalization() == (10.0, 90.0)

    # Without the info the copy would fall back to the 2/98 defaults and predict something else.
    stripped = keras.models.load_model(alone, compile=False)
    output_head(stripped).info = {}
    stripped.save(tmp_path / "elsewhere" / "stripped.keras")
    predict_batch([image], [str(tmp_path / "elsewhere" / "stripped.keras")], tmp_path / "stripped", options)
    guessed = np.load(output_paths(tmp_path / "stripped", image, "npy")["prob"])
    assert not np.array_equal(guessed, np.load(by_itself["prob"]))
