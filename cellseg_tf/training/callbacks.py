"""Training callbacks that survive a restart: best/last/per-epoch checkpoints, resumable early stopping and plateau
LR reduction, the time budget, and the learning-rate column of history.csv.

Each resumable callback exposes `get_state() -> dict` (JSON-safe) and takes `resume_state` to continue where the
killed run stopped; `RunState` writes RUN/last.keras and RUN/train_state.json at every epoch end so a run can be
resumed from its last completed epoch. Models are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras

from ..common.files import atomic_path, write_text_atomic

STATE_FILE = "train_state.json"


def save_model_atomic(model, path: str | os.PathLike) -> Path:
    """model.save to a temporary .keras beside `path`, then rename (a killed run never leaves half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:  # the temp keeps the .keras suffix that model.save picks the format by
        model.save(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2))


def _jsonable(value):
    """Numbers/NumPy scalars/tensors -> float (NaN/inf -> None); other values unchanged."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def current_learning_rate(model) -> float:
    """The optimizer's learning rate now (a schedule is evaluated at the current iteration)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class _Resumable:
    """Mixin: after the parent's `on_train_begin` resets counters, restore `resume_state` (from train_state.json)."""

    state_keys: tuple = ()

    def get_state(self) -> dict:
        return {k: _jsonable(getattr(self, k, None)) for k in self.state_keys}

    def set_resume_state(self, state: "dict | None") -> None:
        self.resume_state = dict(state) if state else None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key, value in (getattr(self, "resume_state", None) or {}).items():
            if key in self.state_keys:
                setattr(self, key, value)


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    """keras EarlyStopping (monitor val_dice, mode max by default) whose wait/best counters survive a resume."""

    state_keys = ("wait", "best", "best_epoch", "stopped_epoch")

    def __init__(self, monitor: str = "val_dice", mode: str = "max", patience: int = 5, **kwargs):
        super().__init__(monitor=monitor, mode=mode, patience=patience, **kwargs)


class ResumableReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    """keras ReduceLROnPlateau on val_dice (max) whose wait/best/cooldown counters survive a resume."""

    state_keys = ("wait", "best", "cooldown_counter")

    def __init__(self, monitor: str = "val_dice", mode: str = "max", factor: float = 0.5, patience: int = 3,
                 min_lr: float = 1e-6, cooldown: int = 0, **kwargs):
        super().__init__(monitor=monitor, mode=mode, factor=factor, patience=patience, min_lr=min_lr,
                         cooldown=cooldown, **kwargs)


class BestCheckpoint(_Resumable, keras.callbacks.Callback):
    """Saves the model to `path` (.keras) whenever `monitor` beats its best so far (ModelCheckpoint, save_best_only).

    NaN never counts as an improvement; `best_epoch` is 0-based.
    """

    state_keys = ("best", "best_epoch")

    def __init__(self, path: str | os.PathLike, monitor: str = "val_dice", mode: str = "max"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = _jsonable((logs or {}).get(self.monitor))
        if value is None:
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_epoch = value, int(epoch)
            save_model_atomic(self.model, self.path)


class AveragedWeights(_Resumable, keras.callbacks.Callback):
    """Validation and every checkpoint see the exponential moving average of the weights (Polyak averaging).

    The optimizer keeps the average (`use_ema=True`: one average per trainable variable, updated in the training
    step). This callback swaps it into the model when validation begins and keeps it there until the next epoch
    begins, so the callbacks after it (best.keras, last.keras, per-epoch models) save it too: put it FIRST in the
    list. Keras's own `SwapEMAWeights(swap_on_epoch=True)` is not used: `fit` overwrites the model with the
    optimizer's slot after the last epoch, which then holds the raw weights, so a run stopped by the time budget or
    early stopping would end on raw weights. `averaged_in_model` survives a resume (last.keras holds the average,
    the slot the raw weights).
    """

    state_keys = ("averaged_in_model",)

    def __init__(self):
        super().__init__()
        self.averaged_in_model = False
        self._averaged: list | None = None

    def _pairs(self) -> list:
        """(model variable, its average) for every trainable variable the optimizer averages."""
        opt = self.model.optimizer
        opt = getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer (mixed_float16)
        if not getattr(opt, "use_ema", False):
            raise ValueError("AveragedWeights needs an optimizer built with use_ema=True (TrainConfig.ema_momentum)")
        if not opt.built:  # no average yet: nothing could be swapped, and the flag would lie
            raise RuntimeError("AveragedWeights: the optimizer has not been built (no training step yet)")
        return [(v, a) for v, a in zip(opt._trainable_variables, opt._model_variables_moving_average)
                if a is not None]

    def _swap(self) -> None:
        for var, average in self._pairs():
            raw = keras.ops.convert_to_numpy(var)
            var.assign(average)
            average.assign(raw)
        self.averaged_in_model = not self.averaged_in_model

    def on_train_begin(self, logs=None):
        self.averaged_in_model, self._averaged = False, None
        super().on_train_begin(logs)  # a resumed run's last.keras may hold the average (resume_state says so)

    def on_epoch_begin(self, epoch, logs=None):
        if self.averaged_in_model:  # train on the raw weights
            self._swap()

    def on_test_begin(self, logs=None):  # validation inside fit: on_epoch_end follows and keeps the average
        if not self.averaged_in_model:
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        if not self.averaged_in_model:  # an epoch without validation
            self._swap()
        self._averaged = [keras.ops.convert_to_numpy(var) for var, _ in self._pairs()]

    def on_train_end(self, logs=None):
        # fit() has just copied the optimizer's slot (the raw weights, while swapped) into the model: end on the
        # average of the last epoch, in the model and in the slot alike
        if self.averaged_in_model and self._averaged is not None:
            for (var, average), value in zip(self._pairs(), self._averaged):
                var.assign(value)
                average.assign(value)
        self.averaged_in_model = False


class EpochCheckpoint(keras.callbacks.Callback):
    """Keeps every epoch's model as `folder/epoch_{NNN}.keras` (1-based), e.g. to pick ensemble members later."""

    def __init__(self, folder: str | os.PathLike):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.folder / f"epoch_{epoch + 1:03d}.keras")


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate at the epoch's first step to the logs (history.csv column `learning_rate`)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.rate = current_learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = getattr(self, "rate", current_learning_rate(self.model))


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` of training have passed in total, at the next batch end.

    The interrupted epoch is cut short but still validated, checkpointed and logged, so a time-limited run overshoots
    its budget by at most one validation pass. `already_s`: training seconds spent before this fit call (earlier
    phases or the run being resumed).
    """

    def __init__(self, seconds: float, already_s: float = 0.0):
        super().__init__()
        self.seconds, self.already_s, self.triggered = float(seconds), float(already_s), False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def _check(self):
        if self.already_s + time.perf_counter() - self.start >= self.seconds:
            self.triggered = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()


class CosineAnnealing(keras.callbacks.Callback):
    """Learning rate held at `learning_rate` for the first `hold` of the run, then cosine-decayed to
    `learning_rate·alpha` over the rest (hold=0: plain cosine decay), over steps or over time.

    Progress is the larger of (optimizer steps / total_steps) and (training seconds / time_budget_s), so a run with a
    time budget anneals fully by the end of its budget however fast the machine is (an "anytime" schedule), and a
    run without one anneals over its planned epochs. Resumes from the restored optimizer iteration count and the
    training seconds already spent (`already_s`). Warm-up: linear over the first `warmup_steps` steps.
    """

    def __init__(self, learning_rate: float, total_steps: int, time_budget_s: float = 0.0, alpha: float = 0.02,
                 warmup_steps: int = 0, already_s: float = 0.0, hold: float = 0.0):
        super().__init__()
        if not 0 <= hold < 1:
            raise ValueError(f"hold must be in [0, 1), got {hold}")
        self.base, self.total = float(learning_rate), max(1, int(total_steps))
        self.budget, self.alpha, self.warmup = float(time_budget_s), float(alpha), int(warmup_steps)
        self.already_s, self.hold = float(already_s), float(hold)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def progress(self, step: int, seconds: float) -> float:
        p = step / self.total
        if self.budget > 0:
            p = max(p, seconds / self.budget)
        return min(1.0, p)

    def rate(self, step: int, seconds: float) -> float:
        """Learning rate at optimizer step `step` after `seconds` of training."""
        decay = max(0.0, self.progress(step, seconds) - self.hold) / (1.0 - self.hold)
        cos = 0.5 * (1.0 + math.cos(math.pi * decay))
        lr = self.base * (self.alpha + (1.0 - self.alpha) * cos)
        if self.warmup > 0 and step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        seconds = self.already_s + time.perf_counter() - self.start
        self.model.optimizer.learning_rate = self.rate(step, seconds)


class RunState(keras.callbacks.Callback):
    """Writes RUN/last.keras and RUN/train_state.json at every epoch end: everything `--resume` needs.

    Put it LAST in the callback list so the other callbacks' counters already include this epoch. The state holds
    epochs_done, the steps per epoch, training seconds so far, the phase, the learning rate and the states of the
    `resumables` (name -> callback with get_state()).
    """

    def __init__(self, run_dir: str | os.PathLike, resumables: dict, info: dict, already_s: float = 0.0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.resumables, self.info, self.already_s = resumables, dict(info), float(already_s)
        self.epochs_done = int(self.info.get("epochs_done", 0))

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.already_s + time.perf_counter() - getattr(self, "start", time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.run_dir / "last.keras")
        self.epochs_done = int(epoch) + 1
        write_state(self.run_dir, {**self.info, "epochs_done": self.epochs_done, "elapsed_s": self.elapsed(),
                                   "learning_rate": current_learning_rate(self.model), "finished": False,
                                   "callbacks": {k: cb.get_state() for k, cb in self.resumables.items()}})


def write_state(run_dir: str | os.PathLike, state: dict) -> Path:
    return write_json_atomic(Path(run_dir) / STATE_FILE, {"version": 1, **state})


def read_state(run_dir: str | os.PathLike) -> "dict | None":
    """RUN/train_state.json as a dict, or None when the run has none."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt training state ({exc})") from None
