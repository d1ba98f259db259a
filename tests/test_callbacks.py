"""Resumable callbacks: best checkpoint keeps the best epoch, early stopping stops (and resumes its counters),
plateau LR reduction, time budget, per-epoch checkpoints, history truncation on resume."""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from cellseg_tf.training.callbacks import (AveragedWeights, BestCheckpoint, EpochCheckpoint, ResumableEarlyStopping,
                                  ResumableReduceLROnPlateau, TimeBudget)
from cellseg_tf.training.engine import _truncate_history


def tiny_model(lr: float = 1e-3) -> keras.Model:
    inp = keras.Input((2,))
    model = keras.Model(inp, keras.layers.Dense(1, name="d")(inp))
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def drive(cb, model, values, key="val_dice", resume_state=None):
    """Run the callback over epochs with scripted `key` values; returns the epoch at which training stopped."""
    cb.set_model(model)
    if resume_state is not None:
        cb.set_resume_state(resume_state)
    model.stop_training = False
    cb.on_train_begin()
    for epoch, v in enumerate(values):
        cb.on_epoch_end(epoch, {key: v})
        if model.stop_training:
            return epoch
    return None


def test_best_checkpoint_keeps_best_epoch_weights(tmp_path):
    model = tiny_model()
    path = tmp_path / "best.keras"
    cb = BestCheckpoint(path)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, dice in enumerate([0.2, 0.7, 0.5, float("nan")]):
        model.get_layer("d").set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
        cb.on_epoch_end(epoch, {"val_dice": dice})
    assert cb.best == pytest.approx(0.7) and cb.best_epoch == 1
    kernel = keras.models.load_model(path, compile=False).get_layer("d").get_weights()[0]
    np.testing.assert_array_equal(kernel, np.ones((2, 1)))  # epoch 1's weights, not the last epoch's
    assert cb.get_state() == {"best": pytest.approx(0.7), "best_epoch": 1}


def test_early_stopping_stops_and_resumes_counters():
    values = [0.5, 0.6, 0.59, 0.58, 0.57]
    assert drive(ResumableEarlyStopping(patience=2), tiny_model(), values) == 3
    # kill after epoch 2 (0-based), resume with the saved counters: stops at the same epoch
    first = ResumableEarlyStopping(patience=2)
    drive(first, tiny_model(), values[:3])
    state = first.get_state()
    assert state["wait"] == 1 and state["best"] == pytest.approx(0.6)
    second = ResumableEarlyStopping(patience=2)
    model = tiny_model()
    second.set_model(model)
    second.set_resume_state(state)
    second.on_train_begin()
    second.on_epoch_end(3, {"val_dice": values[3]})
    assert model.stop_training
    # without the restored counters it would have kept going
    fresh = ResumableEarlyStopping(patience=2)
    assert drive(fresh, tiny_model(), values[3:]) is None


def test_plateau_reduces_lr_and_resumes():
    model = tiny_model(1e-3)
    cb = ResumableReduceLROnPlateau(factor=0.5, patience=2, min_lr=1e-5)
    drive(cb, model, [0.5, 0.4, 0.4])
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    model2 = tiny_model(1e-3)
    cb2 = ResumableReduceLROnPlateau(factor=0.5, patience=2)
    drive(cb2, model2, [0.3], resume_state={"wait": 1, "best": 0.5, "cooldown_counter": 0})
    assert float(model2.optimizer.learning_rate) == pytest.approx(5e-4)


def test_time_budget_counts_earlier_seconds():
    model = tiny_model()
    assert drive(TimeBudget(3600.0), model, [0.1, 0.2]) is None
    cb = TimeBudget(10.0, already_s=11.0)
    assert drive(cb, tiny_model(), [0.1, 0.2]) == 0 and cb.triggered


def test_epoch_checkpoint_keeps_every_epoch(tmp_path):
    model = tiny_model()
    cb = EpochCheckpoint(tmp_path / "epochs")
    drive(cb, model, [0.1, 0.2])
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch_001.keras", "epoch_002.keras"]


def test_truncate_history_drops_rows_of_lost_epochs(tmp_path):
    path = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [0, 1, 2, 3], "loss": [4.0, 3.0, 2.0, 1.0]}).to_csv(path, index=False)
    _truncate_history(path, 2)
    df = pd.read_csv(path)
    assert df["epoch"].tolist() == [0, 1] and df["loss"].tolist() == [4.0, 3.0]


class RecordRaw(keras.callbacks.Callback):
    """Records the trained (raw) kernel after every step and the kernel each validation and epoch end sees."""

    def __init__(self):
        super().__init__()
        self.raw, self.validated, self.at_epoch_end = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.raw.append(self.model.get_layer("d").get_weights()[0].copy())

    def on_test_begin(self, logs=None):
        self.validated.append(self.model.get_layer("d").get_weights()[0].copy())

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(self.model.get_layer("d").get_weights()[0].copy())


@pytest.mark.parametrize("stop_early", [False, True])
def test_averaged_weights_are_validated_saved_and_kept_at_the_end(tmp_path, stop_early):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = (x @ np.array([[2.0], [-1.0]]) + 0.5).astype("float32")
    inp = keras.Input((2,))
    model = keras.Model(inp, keras.layers.Dense(1, name="d", kernel_initializer="zeros")(inp))
    momentum = 0.8
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=momentum), loss="mse")
    averaged, record, best = AveragedWeights(), RecordRaw(), BestCheckpoint(tmp_path / "best.keras", monitor="val_loss",
                                                                             mode="min")

    class StopAfterTwo(keras.callbacks.Callback):  # like the time budget: stop before the planned epochs end
        def on_epoch_end(self, epoch, logs=None):
            if stop_early and epoch == 1:
                self.model.stop_training = True

    model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), verbose=0, shuffle=False,
              callbacks=[averaged, best, record, StopAfterTwo()])
    steps = 4
    ema = record.raw[0]  # Keras starts the average at the first step's weights
    expected = []
    for i, raw in enumerate(record.raw[1:], start=2):
        ema = momentum * ema + (1 - momentum) * raw
        if i % steps == 0:
            expected.append(ema.copy())
    epochs = 2 if stop_early else 3
    assert len(record.validated) == len(record.at_epoch_end) == epochs
    for epoch in range(epochs):
        np.testing.assert_allclose(record.validated[epoch], expected[epoch], rtol=1e-5)  # validation saw the average
        np.testing.assert_allclose(record.at_epoch_end[epoch], expected[epoch], rtol=1e-5)  # so do the checkpoints
        assert not np.allclose(expected[epoch], record.raw[(epoch + 1) * steps - 1])  # which is not the raw weights
    # the model ends on the last epoch's average, not on the raw weights fit() would otherwise leave
    np.testing.assert_allclose(model.get_layer("d").get_weights()[0], expected[epochs - 1], rtol=1e-5)
    saved = keras.models.load_model(tmp_path / "best.keras", compile=False).get_layer("d").get_weights()[0]
    assert any(np.allclose(saved, e, rtol=1e-5) for e in expected[:epochs])


def test_averaged_weights_need_an_optimizer_with_an_average():
    model = tiny_model()
    with pytest.raises(ValueError, match="use_ema"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[AveragedWeights()])
