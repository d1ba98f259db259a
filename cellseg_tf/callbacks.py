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

STATE_FILE = "train_state.json"


def save_model_atomic(model, path: str | os.PathLike) -> Path:
    """model.save to a temporary .keras beside `path`, then rename (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


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
    """Stops training at the end of the first epoch that ends after `seconds` of training in total.

    `already_s`: training seconds spent before this fit call (earlier phases or the run being resumed).
    """

    def __init__(self, seconds: float, already_s: float = 0.0):
        super().__init__()
        self.seconds, self.already_s, self.triggered = float(seconds), float(already_s), False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.already_s + time.perf_counter() - self.start >= self.seconds:
            self.triggered = True
            self.model.stop_training = True


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
