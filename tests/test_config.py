"""TrainConfig: YAML/JSON round trips, type coercion, KEY=VALUE overrides, validation, CLI flag mapping."""
from __future__ import annotations

import json

import pytest
import yaml

from cellseg_tf.cli import _train_config, build_parser
from cellseg_tf.training.config import TrainConfig


def custom() -> TrainConfig:
    return TrainConfig(manifest="m.csv", out="runs/x", model_options={"base_filters": 8, "depth": 3},
                       loss_options={"pos_weight": 3.0}, epochs=7, schedule="exponential",
                       schedule_options={"decay_steps": 9000, "decay_rate": 0.9}, checkpoint_every_epoch=True,
                       freeze_encoder_epochs=2, unfreeze_blocks=2, mixed_precision="off", seed=3)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    config = custom()
    path = config.save(tmp_path / f"config{suffix}")
    text = path.read_text()
    assert (json.loads(text) if suffix == ".json" else yaml.safe_load(text))["schedule"] == "exponential"
    assert TrainConfig.load(path) == config
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_defaults_are_stable():
    d = TrainConfig()
    assert (d.model, d.loss, d.optimizer, d.schedule, d.mixed_precision, d.strategy) == (
        "unet", "bce_dice", "adam", "cosine", "auto", "auto")
    assert d.freeze_encoder_epochs == 0 and not d.checkpoint_every_epoch and not d.tensorboard
    assert d.learning_rate is None and (d.patch_size, d.batch_size) == (128, 16)   # None: the model's own rate


def test_default_learning_rate_is_the_models():
    from cellseg_tf.models import available_models, default_learning_rate

    assert default_learning_rate("unet") == default_learning_rate("attention_unet") == pytest.approx(1e-3)
    pretrained = [m for m in available_models() if m.endswith("_unet") and m not in ("unet", "attention_unet")]
    assert {"densenet121_deconv_unet", "vgg16_attention_unet", "vgg16_attention_ia_unet"} <= set(pretrained)
    assert len(pretrained) == 9 and all(default_learning_rate(m) == pytest.approx(1e-4) for m in pretrained)
    assert TrainConfig.from_dict({"learning_rate": "2e-4"}).learning_rate == pytest.approx(2e-4)


def test_epochs_and_patience_follow_the_time_budget_unless_set():
    plain, timed = TrainConfig(), TrainConfig(time_budget_s=600)
    assert (plain.planned_epochs(), plain.patience()) == (40, 5)       # Das et al. 2025's patience
    assert timed.planned_epochs() >= 10_000 and timed.patience() == 0  # the budget ends the run
    explicit = TrainConfig(time_budget_s=600, epochs=12, early_stopping_patience=3)
    assert (explicit.planned_epochs(), explicit.patience()) == (12, 3)
    assert TrainConfig.from_dict(TrainConfig().to_dict()).epochs is None  # "auto" survives config.yaml
    assert TrainConfig.from_dict({"early_stopping_patience": "7"}).patience() == 7


def test_yaml_strings_are_coerced_and_bad_values_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-4\nepochs: '12'\ntensorboard: 'yes'\n")
    config = TrainConfig.load(path)
    assert config.learning_rate == pytest.approx(1e-4) and config.epochs == 12 and config.tensorboard is True
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict({"epochs": "many"})
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict({"epochz": 3})


def test_override_key_value():
    config = TrainConfig().override(["epochs=5", "schedule_options={decay_steps: 100, decay_rate: 0.5}",
                                     "learning-rate=2e-4", "unfreeze_blocks=3"])
    assert config.epochs == 5 and config.schedule_options == {"decay_steps": 100, "decay_rate": 0.5}
    assert config.learning_rate == pytest.approx(2e-4) and config.unfreeze_blocks == 3
    with pytest.raises(ValueError, match="KEY=VALUE"):
        TrainConfig().override(["nonsense"])


@pytest.mark.parametrize("field,value", [("patch_size", 30), ("mixed_precision", "maybe"), ("strategy", "gpu"),
                                         ("fine_tune_lr_factor", 0.0), ("learning_rate", -1.0),
                                         ("schedule_options", "x"), ("early_stopping_patience", -1),
                                         ("time_budget_s", -5.0), ("mask_threshold", -1.0)])
def test_validate_rejects(field, value):
    config = TrainConfig()
    setattr(config, field, value)
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_cli_flags_override_config_file(tmp_path):
    path = custom().save(tmp_path / "c.yaml")
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "9", "--schedule", "plateau",
                                      "--tensorboard", "--set", "unfreeze_blocks=all"])
    config = _train_config(args)
    assert config.epochs == 9 and config.schedule == "plateau" and config.tensorboard is True
    assert config.unfreeze_blocks == "all" and config.seed == 3 and config.checkpoint_every_epoch is True


def test_unfreeze_blocks_is_all_or_a_count():
    assert TrainConfig().unfreeze_blocks == "all"
    assert TrainConfig.from_dict({"unfreeze_blocks": "ALL"}).unfreeze_blocks == "all"
    assert TrainConfig.from_dict({"unfreeze_blocks": "2"}).unfreeze_blocks == 2
    with pytest.raises(ValueError, match="unfreeze_blocks"):
        TrainConfig.from_dict({"unfreeze_blocks": "deep"})
    with pytest.raises(ValueError, match="unfreeze_blocks"):
        TrainConfig(unfreeze_blocks=0).validate()


def test_earlier_freeze_keys_load_with_a_warning(tmp_path):
    """Configs saved by earlier versions (fine_tune_layers, encoder_layers) still load, mapped onto unfreeze_blocks."""
    path = tmp_path / "old.yaml"
    path.write_text("freeze_encoder_epochs: 3\nfine_tune_layers: 20\nencoder_layers: ['enc*', 'backbone*']\n")
    with pytest.warns(FutureWarning) as record:
        config = TrainConfig.load(path)
    messages = " ".join(str(w.message) for w in record)
    assert "unfreeze_blocks=1" in messages and "encoder_layers is ignored" in messages
    assert (config.freeze_encoder_epochs, config.unfreeze_blocks) == (3, 1)
    with pytest.warns(FutureWarning, match="unfreeze_blocks='all'"):
        assert TrainConfig().override(["fine_tune_layers=0"]).unfreeze_blocks == "all"
    assert "fine_tune_layers" not in config.to_dict() and "encoder_layers" not in config.to_dict()


def test_bare_on_off_words_stay_words_for_string_fields(tmp_path):
    """YAML 1.1 reads `off` as False: `--set mixed_precision=off` and a config file's `mixed_precision: off` work."""
    assert TrainConfig().override(["mixed_precision=off"]).mixed_precision == "off"
    assert TrainConfig().override(["mixed_precision=on"]).mixed_precision == "on"
    path = tmp_path / "c.yaml"
    path.write_text("mixed_precision: off\n")
    assert TrainConfig.load(path).mixed_precision == "off"


def test_predict_number_lists_parse_or_are_a_usage_error(capsys):
    args = build_parser().parse_args(["predict", "--model", "a.keras", "--model", "b.keras", "--input", "x",
                                      "--out", "o", "--model-weights", "1,2.5", "--model-thresholds", "0.4,0.6"])
    assert args.model_weights == [1.0, 2.5] and args.model_thresholds == [0.4, 0.6]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--model", "a.keras", "--input", "x", "--out", "o",
                                   "--model-weights", "1,heavy"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
