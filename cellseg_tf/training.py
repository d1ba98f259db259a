"""The training engine: config -> data -> model -> fit with checkpoints -> RUN/{best,last}.keras, history, curves.

`train(config)` is the Python API; `cellseg-tf train` maps flags onto a TrainConfig and calls it.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .dataset import Pair, load_pairs, train_dataset, val_dataset
from .io import open_manifest
from .manifest import Sample, select
from .visualize import plot_curves


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path
    last_model: Path
    history: dict
    train_seconds: float
    best_val_dice: float


def split_train_val(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Manifest rows -> (train, val). Uses split=val rows if any, else a seeded `val_fraction` of train images."""
    train, val = select(samples, "train"), select(samples, "val")
    if not train:
        raise ValueError("the manifest has no split=train rows")
    if val:
        return train, val
    if len(train) == 1:
        return train, train  # a single image: validate on it (the only honest option left)
    n_val = max(1, int(round(val_fraction * len(train))))
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx = set(order[:n_val].tolist())
    return ([s for i, s in enumerate(train) if i not in val_idx], [s for i, s in enumerate(train) if i in val_idx])


def default_steps_per_epoch(pairs: list[Pair], patch_size: int, batch_size: int) -> int:
    """About two passes over the training pixels per epoch, at least 8 steps."""
    pixels = sum(p.mask.size for p in pairs)
    return max(8, math.ceil(2 * pixels / (patch_size ** 2 * batch_size)))


def resolve_mixed_precision(mode: str) -> bool:
    """auto -> True only when TensorFlow sees a GPU."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Set the Keras global dtype policy for the block and restore the previous one after (no leakage)."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _time_budget_callback(seconds: float):
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Stops training at the end of the first epoch that ends after `seconds` of training."""

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if time.perf_counter() - self.start >= seconds:
                self.model.stop_training = True

    return TimeBudget()


def train(config: TrainConfig, samples: list[Sample] | None = None) -> TrainResult:
    """Train per `config`; writes RUN/config.yaml, best.keras (best val Dice), last.keras, history.csv, curves.png."""
    import keras

    from .losses import get_loss
    from .metrics import default_metrics
    from .models import build_model

    config.validate()
    run = Path(config.out)
    run.mkdir(parents=True, exist_ok=True)
    config.save(run / "config.yaml")
    if samples is None:
        samples = open_manifest(config.manifest)
    train_rows, val_rows = split_train_val(samples, config.val_fraction, config.seed)
    train_pairs = load_pairs(train_rows, config.channels, config.norm_low, config.norm_high)
    val_pairs = load_pairs(val_rows, config.channels, config.norm_low, config.norm_high)
    steps = config.steps_per_epoch or default_steps_per_epoch(train_pairs, config.patch_size, config.batch_size)

    keras.utils.set_random_seed(config.seed)
    train_ds = train_dataset(train_pairs, config.patch_size, config.batch_size, config.augmentation, config.seed)
    val_ds = val_dataset(val_pairs, config.patch_size, config.batch_size)

    best_path, last_path = run / "best.keras", run / "last.keras"
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_dice", mode="max", save_best_only=True),
        keras.callbacks.CSVLogger(str(run / "history.csv")),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_dice", mode="max",
                                                       patience=config.early_stopping_patience))
    if config.time_budget_s > 0:
        callbacks.append(_time_budget_callback(config.time_budget_s))

    with precision_policy(resolve_mixed_precision(config.mixed_precision)):
        model = build_model(config.model, input_shape=(config.patch_size, config.patch_size, config.channels),
                            **config.model_options)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=get_loss(config.loss, **config.loss_options), metrics=default_metrics())
        start = time.perf_counter()
        fit = model.fit(train_ds, steps_per_epoch=steps, epochs=config.epochs, validation_data=val_ds,
                        callbacks=callbacks, verbose=config.verbose)
        seconds = time.perf_counter() - start
        model.save(last_path)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    plot_curves(history, run / "curves.png", title=f"{config.model} / {config.loss}")
    best = max(history.get("val_dice", [float("nan")]))
    return TrainResult(run, best_path, last_path, history, seconds, best)
