"""Training metrics (Keras, stateful): Dice, IoU, precision, recall of the mask thresholded at `threshold`.

They accumulate TP/FP/FN over all batches of an epoch, so the epoch value is the global ratio over every pixel seen
(pooled, "micro" average), not the mean of per-batch ratios, which differs when batches hold different amounts of
foreground. Empty-mask convention: a ratio whose denominator is 0 (nothing to find and nothing predicted) is 1.0.
`DiceMetric` is named "dice", so `model.fit` logs `val_dice` for `ModelCheckpoint(monitor="val_dice", mode="max")`.

y_true: (B, H, W, K) with channel 0 the foreground {0, 1} (> 0.5 is foreground); y_pred: (B, H, W, K) with channel 0
the foreground probability (> threshold is foreground). Only channel 0 is scored: for instance targets (K = 2, see
`data.targets`) the extra channel is a boundary or distance map, not a mask. Any float dtype (float16 under mixed
precision is cast to float32 first). sample_weight: optional (B,) per-sample weights (a weighted pixel count).
"""
from __future__ import annotations

import keras
from keras import ops


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates pixel TP, FP, FN in float32 variables; subclasses turn them into a ratio."""

    def __init__(self, name: str, threshold: float = 0.5, dtype=None):
        super().__init__(name=name, dtype="float32")
        self.threshold = float(threshold)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.cast(y_true[..., :1], "float32") > 0.5, "float32")        # channel 0: foreground
        p = ops.cast(ops.cast(y_pred[..., :1], "float32") > self.threshold, "float32")
        if sample_weight is not None:
            w = ops.cast(sample_weight, "float32")
            w = ops.reshape(w, (-1,) + (1,) * (len(t.shape) - 1))
            t_w = t * w
            p_w = p * w
        else:
            t_w, p_w = t, p
        self.tp.assign_add(ops.sum(t_w * p))
        self.fp.assign_add(ops.sum((1.0 - t) * p_w))
        self.fn.assign_add(ops.sum(t_w * (1.0 - p)))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    @staticmethod
    def _ratio(num, den):
        return ops.where(den > 0, num / ops.maximum(den, 1e-12), 1.0)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="cellseg_tf")
class DiceMetric(_ConfusionMetric):
    """Dice (= pixel F1) = 2TP / (2TP + FP + FN); 1.0 when truth and prediction are both empty."""

    def __init__(self, name: str = "dice", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class IoUMetric(_ConfusionMetric):
    """IoU (Jaccard) of the foreground = TP / (TP + FP + FN); 1.0 when both are empty.

    Equals `keras.metrics.BinaryIoU(target_class_ids=[1], threshold=t)` except for that empty-mask convention.
    """

    def __init__(self, name: str = "iou", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class PrecisionMetric(_ConfusionMetric):
    """Precision = TP / (TP + FP); 1.0 when nothing is predicted (no false positive was made)."""

    def __init__(self, name: str = "precision", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fp)


@keras.saving.register_keras_serializable(package="cellseg_tf")
class RecallMetric(_ConfusionMetric):
    """Recall = TP / (TP + FN); 1.0 when the truth is empty (nothing could be missed)."""

    def __init__(self, name: str = "recall", threshold: float = 0.5, dtype=None):
        super().__init__(name, threshold)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fn)


def default_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """[dice, iou, precision, recall] at `threshold`: what `training.train` compiles with."""
    return [DiceMetric(threshold=threshold), IoUMetric(threshold=threshold),
            PrecisionMetric(threshold=threshold), RecallMetric(threshold=threshold)]
