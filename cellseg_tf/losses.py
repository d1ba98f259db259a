"""Segmentation losses as Keras 3 Loss classes behind a registry: `get_loss(name, **params)`.

Each loss is a plain function of (y_true, y_pred) -> per-sample loss (B,) computed in float32 (safe under
mixed_float16), wrapped by a thin registered class whose parameters round-trip through `get_config()`.
y_true: (B, H, W, 1) {0, 1}; y_pred: (B, H, W, 1) probabilities.
"""
from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-7
LOSS_REGISTRY: dict[str, type] = {}


def register_loss(name: str):
    """Class decorator: registers with Keras serialisation (package cellseg_tf) and in our name registry."""
    def deco(cls):
        cls = keras.saving.register_keras_serializable(package="cellseg_tf")(cls)
        LOSS_REGISTRY[name] = cls
        return cls
    return deco


def available_losses() -> list[str]:
    return sorted(LOSS_REGISTRY)


def get_loss(name: str, **params) -> keras.losses.Loss:
    if name not in LOSS_REGISTRY:
        raise KeyError(f"unknown loss {name!r}; available: {', '.join(available_losses())}")
    return LOSS_REGISTRY[name](**params)


def _f32(y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), _EPS, 1.0 - _EPS)
    return y_true, y_pred


def bce(y_true, y_pred, pos_weight: float = 1.0):
    """Mean (weighted) binary cross-entropy per sample: -mean(w·t·log p + (1-t)·log(1-p)), w = pos_weight."""
    t, p = _f32(y_true, y_pred)
    ll = pos_weight * t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p)
    return -ops.mean(ll, axis=(1, 2, 3))


def soft_dice(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice loss per sample: 1 - (2·Σtp + s) / (Σt + Σp + s) (Milletari et al. 2016)."""
    t, p = _f32(y_true, y_pred)
    inter = ops.sum(t * p, axis=(1, 2, 3))
    denom = ops.sum(t, axis=(1, 2, 3)) + ops.sum(p, axis=(1, 2, 3))
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


class _ParamLoss(keras.losses.Loss):
    """Base: stores keyword parameters and returns them in get_config()."""

    _params: dict = {}

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None, **params):
        super().__init__(name=name or type(self).__name__.lower(), reduction=reduction, dtype="float32")
        unknown = set(params) - set(self._params)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown parameter(s) {sorted(unknown)}; "
                            f"accepted: {sorted(self._params)}")
        self.params = {**self._params, **params}

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("dtype", None)
        return {**cfg, **self.params}


@register_loss("bce")
class BCELoss(_ParamLoss):
    """Binary cross-entropy; `pos_weight` > 1 up-weights the foreground class (weighted BCE)."""

    _params = {"pos_weight": 1.0}

    def call(self, y_true, y_pred):
        return bce(y_true, y_pred, self.params["pos_weight"])


@register_loss("dice")
class DiceLoss(_ParamLoss):
    """Soft Dice loss (per sample)."""

    _params = {"smooth": 1.0}

    def call(self, y_true, y_pred):
        return soft_dice(y_true, y_pred, self.params["smooth"])


@register_loss("bce_dice")
class BCEDiceLoss(_ParamLoss):
    """bce_weight·BCE + dice_weight·soft Dice: pixel-wise calibration plus overlap, robust to class imbalance."""

    _params = {"bce_weight": 1.0, "dice_weight": 1.0, "smooth": 1.0, "pos_weight": 1.0}

    def call(self, y_true, y_pred):
        p = self.params
        return (p["bce_weight"] * bce(y_true, y_pred, p["pos_weight"])
                + p["dice_weight"] * soft_dice(y_true, y_pred, p["smooth"]))
