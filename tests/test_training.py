"""Training engine: resume continuity, time budget, encoder freeze/fine-tune phases, mixed precision, strategies."""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from cellseg_tf.training.callbacks import read_state
from cellseg_tf.cli import main
from cellseg_tf.training.config import TrainConfig
from cellseg_tf.training.engine import (plan_phases, precision_policy, resolve_mixed_precision, resolve_precision,
                                        train)

STEPS = 2


def tiny_config(manifest, out, **kw) -> TrainConfig:
    base = dict(manifest=str(manifest), out=str(out), epochs=3, patch_size=32, batch_size=2, steps_per_epoch=STEPS,
                model_options={"base_filters": 4, "depth": 2}, augmentation="none", verbose=0)
    return TrainConfig(**{**base, **kw})


class KillMidEpoch(keras.callbacks.Callback):
    """Simulates a crash: raises during the first batch of epoch `epoch` (0-based)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.kill_epoch, self.epoch = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_kill_continues_epochs_history_optimizer_and_schedule(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_manifest, run, schedule="exponential", learning_rate=1e-3,
                         schedule_options={"decay_steps": STEPS, "decay_rate": 0.5},
                         sampling_weights={"background": 1, "small": 4, "large": 2},
                         hard_mining=True, hard_mining_options={"max_patches": 4})
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[KillMidEpoch(1)])
    state = read_state(run)
    assert state["epochs_done"] == 1 and not state["finished"]
    assert len(pd.read_csv(run / "history.csv")) == 1
    assert keras.mixed_precision.global_policy().name == "float32"  # restored despite the crash

    rc = main(["train", "--resume", str(run), "--verbose", "0"])
    assert rc == 0
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [0, 1, 2]
    # staircase schedule continued from the restored iteration counter: lr at each epoch's first step
    np.testing.assert_allclose(hist["learning_rate"], [1e-3, 5e-4, 2.5e-4], rtol=1e-5)
    model = keras.models.load_model(run / "last.keras")
    assert int(model.optimizer.iterations) == 3 * STEPS
    state = read_state(run)
    assert state["finished"] and state["stop_reason"] == "epochs" and state["epochs_done"] == 3
    assert state["callbacks"]["best"]["best_epoch"] == int(hist["val_dice"].idxmax())
    assert len(state["callbacks"]["hard_mining"]["indices"]) > 0 and hist["hard_mining_loss"].notna().all()
    for name in ("best.keras", "last.keras", "config.yaml", "curves.png"):
        assert (run / name).is_file(), name

    # resuming a finished run trains nothing; raising epochs extends it
    rc = main(["train", "--resume", str(run), "--epochs", "4", "--verbose", "0"])
    assert rc == 0
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2, 3]
    assert int(keras.models.load_model(run / "last.keras").optimizer.iterations) == 4 * STEPS
    assert TrainConfig.load(run / "config.yaml").epochs == 4


def test_resume_without_state_is_a_clear_error(tmp_path, tiny_manifest):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_config(tiny_manifest, tmp_path / "empty"), resume=True)


@pytest.fixture
def nested_encoder_model():
    """Registers a tiny model whose encoder is a nested sub-model named 'encoder' (zoo-style) with two blocks,
    [e_conv1] and [e_bn, e_conv2] (a block ends at each encoder output); removed after."""
    from keras import layers

    from cellseg_tf.models import MODEL_REGISTRY, register_model

    @register_model("_test_nested_encoder", stride=lambda **_: 1)
    def build(input_shape=(None, None, 1), **_):
        enc_in = keras.Input(input_shape)
        skip = layers.Conv2D(4, 3, padding="same", name="e_conv1")(enc_in)
        e = layers.BatchNormalization(name="e_bn")(skip)
        e = layers.Conv2D(4, 3, padding="same", activation="relu", name="e_conv2")(e)
        encoder = keras.Model(enc_in, [skip, e], name="encoder")
        inp = keras.Input(input_shape)
        x = layers.Concatenate(name="dec_concat")(encoder(inp))
        x = layers.Conv2D(4, 3, padding="same", activation="relu", name="dec_conv")(x)
        return keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="head")(x))

    yield "_test_nested_encoder"
    MODEL_REGISTRY.pop("_test_nested_encoder", None)


class WeightRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.snapshots = []

    def on_train_begin(self, logs=None):
        if not self.snapshots:
            self.snapshots.append(self._weights())

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(self._weights())

    def _weights(self):
        enc = self.model.get_layer("encoder")
        return {"e_conv1": enc.get_layer("e_conv1").get_weights()[0].copy(),
                "e_conv2": enc.get_layer("e_conv2").get_weights()[0].copy(),
                "e_bn": enc.get_layer("e_bn").get_weights()[2].copy(),  # moving mean
                "dec_conv": self.model.get_layer("dec_conv").get_weights()[0].copy()}


def test_freeze_then_fine_tune_deepest_encoder_block_at_lower_lr(tiny_manifest, tmp_path, nested_encoder_model):
    rec = WeightRecorder()
    config = tiny_config(tiny_manifest, tmp_path / "run", model=nested_encoder_model, model_options={}, epochs=2,
                         freeze_encoder_epochs=1, unfreeze_blocks=1, fine_tune_lr_factor=0.1, learning_rate=1e-2,
                         checkpoint_every_epoch=True)
    result = train(config, callbacks=[rec])
    start, after_frozen, after_tune = rec.snapshots
    same = lambda a, b, k: np.array_equal(a[k], b[k])  # noqa: E731
    assert same(start, after_frozen, "e_conv1") and same(start, after_frozen, "e_conv2")
    assert same(start, after_frozen, "e_bn")
    assert not same(start, after_frozen, "dec_conv")
    assert not same(after_frozen, after_tune, "e_conv2")       # deepest encoder block unfrozen...
    assert same(after_frozen, after_tune, "e_conv1")           # ...the shallower block stays frozen
    assert same(after_frozen, after_tune, "e_bn")              # and so does BatchNorm in the unfrozen block
    np.testing.assert_allclose(result.history["learning_rate"], [1e-2, 1e-3], rtol=1e-5)
    assert read_state(tmp_path / "run")["phase"] == "fine_tune"
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_001.keras", "epoch_002.keras"]


@pytest.fixture
def flat_val_dice(monkeypatch):
    """Every Dice metric reports 0.5: val_dice never improves after the first epoch."""
    from cellseg_tf.training.metrics import DiceMetric

    monkeypatch.setattr(DiceMetric, "result", lambda self: keras.ops.convert_to_tensor(0.5, "float32"))


def _weights(path):
    return keras.models.load_model(path).get_weights()


def test_early_stopping_stops_and_best_checkpoint_is_the_best_epoch(tiny_manifest, tmp_path, flat_val_dice):
    run = tmp_path / "run"
    result = train(tiny_config(tiny_manifest, run, epochs=6, early_stopping_patience=2, learning_rate=1e-2,
                               checkpoint_every_epoch=True))
    assert result.stop_reason == "early_stopping" and read_state(run)["stop_reason"] == "early_stopping"
    assert len(result.history["loss"]) == 3  # best at epoch 1 (1-based), then 2 epochs without improvement
    best, first, last = _weights(run / "best.keras"), _weights(run / "epochs/epoch_001.keras"), _weights(
        run / "last.keras")
    assert all(np.array_equal(a, b) for a, b in zip(best, first))
    assert not all(np.array_equal(a, b) for a, b in zip(best, last))


def test_early_stop_while_frozen_moves_on_to_fine_tuning(tiny_manifest, tmp_path, nested_encoder_model,
                                                         flat_val_dice):
    rec = WeightRecorder()
    config = tiny_config(tiny_manifest, tmp_path / "run", model=nested_encoder_model, model_options={}, epochs=8,
                         freeze_encoder_epochs=5, fine_tune_lr_factor=0.1, learning_rate=1e-2,
                         early_stopping_patience=1, schedule="constant")
    result = train(config, callbacks=[rec])
    # frozen: epochs 1-2 (stops: no improvement), fine-tuning: epoch 3 (stops again, fresh patience)
    np.testing.assert_allclose(result.history["learning_rate"], [1e-2, 1e-2, 1e-3], rtol=1e-5)
    assert result.stop_reason == "early_stopping" and read_state(tmp_path / "run")["phase"] == "fine_tune"
    assert not np.array_equal(rec.snapshots[-2]["e_conv2"], rec.snapshots[-1]["e_conv2"])  # encoder unfrozen


def test_a_time_budget_ends_the_run_and_the_cosine_schedule_anneals_over_it(tiny_manifest, tmp_path, flat_val_dice):
    """epochs and patience left automatic: the budget, not epoch 40 or early stopping (val Dice is flat here),
    ends the run, and the learning rate has decayed most of the way by then."""
    # The budget is sized from one measured epoch (tracing included), so a slow or busy machine still fits >= 3.
    one_epoch_s = train(tiny_config(tiny_manifest, tmp_path / "probe", epochs=1)).train_seconds
    budget = max(4.0, 4 * one_epoch_s)
    result = train(tiny_config(tiny_manifest, tmp_path / "run", epochs=None, time_budget_s=budget, learning_rate=1e-3))
    assert result.stop_reason == "time_budget" and budget <= result.train_seconds < budget + 2 * one_epoch_s + 10
    lr = result.history["learning_rate"]
    assert len(lr) >= 3 and lr[-1] < 0.5 * lr[0] and all(a >= b for a, b in zip(lr, lr[1:]))


def test_fresh_run_in_an_old_run_folder_leaves_no_stale_models(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    (run / "epochs").mkdir(parents=True)
    for stale in (run / "best.keras", run / "epochs" / "epoch_009.keras"):
        stale.write_text("a model of an older run")
    train(tiny_config(tiny_manifest, run, epochs=1, checkpoint_every_epoch=True))
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_001.keras"]
    assert isinstance(keras.models.load_model(run / "best.keras"), keras.Model)


def test_tensorboard_without_the_package_is_a_clear_error(tiny_manifest, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            train(tiny_config(tiny_manifest, tmp_path / "run", tensorboard=True))
        assert not (tmp_path / "run").exists()
    else:
        result = train(tiny_config(tiny_manifest, tmp_path / "run", epochs=1, tensorboard=True))
        assert list((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_phases_follow_freeze_encoder_epochs():
    assert [p.name for p in plan_phases(TrainConfig(epochs=5, freeze_encoder_epochs=2))] == ["frozen", "fine_tune"]
    assert [(p.start, p.end) for p in plan_phases(TrainConfig(epochs=5, freeze_encoder_epochs=2))] == [(0, 2), (2, 5)]
    assert [p.name for p in plan_phases(TrainConfig(epochs=5, freeze_encoder_epochs=9))] == ["frozen"]
    assert [p.name for p in plan_phases(TrainConfig(epochs=5))] == ["train"]


def test_unet_fine_tunes_its_deepest_enc_level(tiny_manifest, tmp_path):
    """The U-Net's encoder blocks are its enc<level> layers: frozen for one epoch, then only the deepest level (and
    the decoder) changes; the fine-tuned model's flags survive in last.keras."""
    run = tmp_path / "run"
    config = tiny_config(tiny_manifest, run, epochs=2, freeze_encoder_epochs=1, unfreeze_blocks=1,
                         checkpoint_every_epoch=True, learning_rate=1e-2)
    train(config)
    first, second = (keras.models.load_model(run / "epochs" / f"epoch_00{i}.keras") for i in (1, 2))
    changed = {l.name: any(not np.array_equal(a, b) for a, b in zip(l.get_weights(), second.get_layer(l.name)
                                                                      .get_weights()))
               for l in first.layers if l.weights}
    assert changed["enc1_a_conv"] and changed["enc1_b_conv"] and changed["dec0_a_conv"]
    assert not changed["enc0_a_conv"] and not changed["enc0_b_conv"] and not changed["enc1_a_bn"]
    assert second.get_layer("enc1_a_conv").trainable and not second.get_layer("enc0_a_conv").trainable


def test_unfreeze_blocks_beyond_the_encoder_is_a_clear_error(tiny_manifest, tmp_path):
    config = tiny_config(tiny_manifest, tmp_path / "run", epochs=2, freeze_encoder_epochs=1, unfreeze_blocks=5)
    with pytest.raises(ValueError, match="unfreeze_blocks must be 0..2"):
        train(config)
    assert not (tmp_path / "run" / "history.csv").exists()      # failed before the first epoch, not after it


def test_a_config_with_the_old_fine_tune_keys_still_trains(tiny_manifest, tmp_path):
    data = {**tiny_config(tiny_manifest, tmp_path / "run", epochs=2, freeze_encoder_epochs=1).to_dict(),
            "fine_tune_layers": 0, "encoder_layers": ["enc*"]}
    data.pop("unfreeze_blocks")
    with pytest.warns(FutureWarning, match="fine_tune_layers|encoder_layers"):
        config = TrainConfig.from_dict(data)
    assert config.unfreeze_blocks == "all"
    result = train(config)
    assert len(result.history["loss"]) == 2 and read_state(tmp_path / "run")["phase"] == "fine_tune"


def test_precision_policy_sets_and_restores_even_on_error(monkeypatch):
    import cellseg_tf.training.engine as engine

    assert resolve_mixed_precision("on") and not resolve_mixed_precision("off")
    assert resolve_precision("bfloat16") == "mixed_bfloat16" and resolve_precision("on") == "mixed_float16"
    # auto: bfloat16 on a CPU with native bfloat16 instructions, float32 on one without, float16 on a GPU
    import cellseg_tf.models.loading as loading

    for gpu, native, expected in ((False, True, "mixed_bfloat16"), (False, False, "float32"),
                                  (True, True, "mixed_float16"), (True, False, "mixed_float16")):
        monkeypatch.setattr(engine, "cpu_has_native_bfloat16", lambda native=native: native)
        monkeypatch.setattr(loading, "accelerator_available", lambda gpu=gpu: gpu)
        assert resolve_precision("auto") == expected
        assert resolve_mixed_precision("auto") is (expected != "float32")
    monkeypatch.undo()
    with precision_policy(True):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision_policy(True):
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_compile_wraps_loss_scaling_and_outputs_float32():
    from cellseg_tf.training.losses import get_loss
    from cellseg_tf.models import build_model
    from cellseg_tf.training.schedules import build_optimizer

    with precision_policy(True):
        model = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
        model.compile(optimizer=build_optimizer("adam", 1e-3), loss=get_loss("bce_dice"))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("enc0_a_conv").compute_dtype == "float16"
        out = model(np.zeros((1, 32, 32, 1), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_run_resumes_with_loss_scale_state(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_manifest, run, epochs=1, mixed_precision="on"))
    assert keras.mixed_precision.global_policy().name == "float32"
    result = train(tiny_config(tiny_manifest, run, epochs=2, mixed_precision="on"), resume=True)
    assert read_state(run)["mixed_precision"] is True and len(result.history["loss"]) == 2
    with precision_policy(True):  # a mixed run's optimizer (LossScaleOptimizer) loads under the mixed policy
        model = keras.models.load_model(result.last_model)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(model.optimizer.iterations) == 2 * STEPS


def test_bfloat16_run_reproduces_itself_outputs_float32_and_resumes(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    first = train(tiny_config(tiny_manifest, run, epochs=1, mixed_precision="bfloat16"))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    weights = keras.models.load_model(first.last_model).get_weights()
    again = train(tiny_config(tiny_manifest, tmp_path / "again", epochs=1, mixed_precision="bfloat16"))
    for a, b in zip(weights, keras.models.load_model(again.last_model).get_weights()):
        np.testing.assert_array_equal(a, b)  # a seeded bfloat16 run reproduces itself
    state = read_state(run)
    assert state["precision"] == "mixed_bfloat16" and state["mixed_precision"] is True
    result = train(tiny_config(tiny_manifest, run, epochs=2, mixed_precision="bfloat16"), resume=True)
    assert len(result.history["loss"]) == 2 and np.isfinite(result.history["loss"]).all()
    model = keras.models.load_model(result.last_model)
    assert model.get_layer("enc0_a_conv").compute_dtype == "bfloat16"
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs no loss scaling
    assert int(model.optimizer.iterations) == 2 * STEPS
    out = model(np.zeros((1, 32, 32, 1), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_strategy_selection_on_cpu():
    import tensorflow as tf

    from cellseg_tf.training.distribute import select_strategy, strategy_name

    assert strategy_name(select_strategy("auto")) == "default"
    mirrored = select_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync >= 1
    with pytest.raises(ValueError, match="unknown strategy"):
        select_strategy("gpu-please")


@pytest.fixture(scope="module")
def label_manifest(tmp_path_factory):
    """4 synthetic images whose masks are 16-bit instance-label PNGs (touching nuclei), 3 train / 1 val."""
    from cellseg_tf.data.io import write_png, write_tiff
    from cellseg_tf.data.manifest import write_manifest
    from cellseg_tf.data.synthetic import nuclei_image

    root, rng, rows = tmp_path_factory.mktemp("labels"), np.random.default_rng(0), []
    for i, split in enumerate(["train", "train", "train", "val"]):
        image, labels = nuclei_image((64, 64), n_nuclei=10, radius=(4, 8), rng=rng)
        mask = np.where(labels > 0, labels + 300, 0).astype(np.uint16)
        rows.append({"image": str(write_tiff(root / f"i{i}.tif", image)), "mask": str(write_png(root / f"m{i}.png", mask)),
                     "split": split})
    return write_manifest(root / "manifest.csv", rows)


def test_label_masks_train_a_two_channel_distance_model_and_resume(label_manifest, tmp_path):
    from cellseg_tf.models import target_kind

    run = tmp_path / "run"
    result = train(tiny_config(label_manifest, run, epochs=2, augmentation="default"))   # target: auto
    assert result.target == "distance" and read_state(run)["target"] == "distance"
    best = keras.models.load_model(result.best_model, safe_mode=True)
    assert target_kind(best) == "distance" and best.output.shape[-1] == 2
    assert np.isfinite(result.history["val_dice"]).all() and len(result.history["loss"]) == 2
    resumed = train(tiny_config(label_manifest, run, epochs=3, augmentation="default"), resume=True)
    assert resumed.target == "distance" and len(resumed.history["loss"]) == 3
    with pytest.raises(ValueError, match="TrainConfig.target"):
        train(tiny_config(label_manifest, tmp_path / "bad", target="contour", model_options={"out_channels": 2}))


def test_weight_average_run_saves_the_average_and_resumes_from_the_raw_weights(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_manifest, run, ema_momentum=0.9)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[KillMidEpoch(1)])
    state = read_state(run)
    assert state["epochs_done"] == 1 and state["callbacks"]["averaged_weights"] == {"averaged_in_model": True}
    last = keras.models.load_model(run / "last.keras")
    opt = last.optimizer
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.9)
    # last.keras holds the average in the model and the raw weights in the optimizer's slot (restored on resume)
    model_w = [keras.ops.convert_to_numpy(v) for v in opt._trainable_variables]
    slot_w = [keras.ops.convert_to_numpy(v) for v in opt._model_variables_moving_average]
    assert any(not np.allclose(a, b) for a, b in zip(model_w, slot_w))

    class FirstStep(keras.callbacks.Callback):  # the weights the resumed run's first step trains from
        def on_train_batch_begin(self, batch, logs=None):
            if not hasattr(self, "weights"):
                self.weights = [keras.ops.convert_to_numpy(v) for v in self.model.optimizer._trainable_variables]

    first = FirstStep()
    train(TrainConfig.load(run / "config.yaml"), resume=True, callbacks=[first])
    assert len(first.weights) == len(slot_w) > 0
    for got, raw in zip(first.weights, slot_w):
        np.testing.assert_allclose(got, raw, rtol=1e-6)  # training goes on from the raw weights, not the average
    state = read_state(run)
    assert state["finished"] and state["epochs_done"] == 3
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    best = keras.models.load_model(run / "best.keras")
    assert best.optimizer.use_ema
    assert TrainConfig.load(run / "config.yaml").ema_momentum == pytest.approx(0.9)


def test_weight_average_options_are_checked(tiny_manifest, tmp_path):
    with pytest.raises(ValueError, match="ema_momentum"):
        tiny_config(tiny_manifest, tmp_path / "a", ema_momentum=1.0).validate()
    with pytest.raises(ValueError, match="use_ema"):
        train(tiny_config(tiny_manifest, tmp_path / "b", ema_momentum=0.9, optimizer_options={"use_ema": False}))
    train(tiny_config(tiny_manifest, tmp_path / "c", epochs=1))  # off by default
    assert not keras.models.load_model(tmp_path / "c" / "last.keras").optimizer.use_ema
