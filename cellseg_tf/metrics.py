"""Training metrics (Keras, stateful): Dice, IoU, precision, recall at a threshold.

They accumulate TP/FP/FN over all batches of an epoch, so the epoch value is the global ratio (not the mean of batch
ratios). Empty truth and empty prediction gives 1.0 (perfect agreement). Usable as `monitor="val_dice"`.
"""
from __future__ import annotations

import keras
from keras import ops


class _ConfusionMetric(keras.metrics.Metric):
    def __init__(self, name: str, threshold: float = 0.5, dtype=None):
        super().__init__(name=name, dtype="float32")
        self.threshold = float(threshold)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
        p = ops.cast(ops.cast(y_pred, "float32") > self.threshold, "float32")
        self.tp.assign_add(ops.sum(t * p))
        self.fp.assign_add(ops.sum((1.0 - t) * p))
        self.fn.assign_add(ops.sum(t * (1.0 - p)))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def _ratio(self, num, den):
        return ops.where(den > 0, num / ops.maximum(den, 1e-12), 1.0)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="cellseg_tf")
class DiceMetric(_ConfusionMetric):
    """Dice = 2TP / (2TP + FP + FN)."""

    def __init__(self, name: str = "dice", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class IoUMetric(_ConfusionMetric):
    """IoU (Jaccard) = TP / (TP + FP + FN)."""

    def __init__(self, name: str = "iou", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class PrecisionMetric(_ConfusionMetric):
    """Precision = TP / (TP + FP)."""

    def __init__(self, name: str = "precision", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fp)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class RecallMetric(_ConfusionMetric):
    """Recall = TP / (TP + FN)."""

    def __init__(self, name: str = "recall", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fn)


def default_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    return [DiceMetric(threshold=threshold), IoUMetric(threshold=threshold),
            PrecisionMetric(threshold=threshold), RecallMetric(threshold=threshold)]
