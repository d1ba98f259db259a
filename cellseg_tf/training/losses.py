"""Segmentation losses as Keras 3 Loss classes behind a registry: `get_loss(name, **params)`, `available_losses()`.

Each loss is a plain function `f(y_true, y_pred, **params) -> (B,)` computed in float32 (`loss_functions`: the
formulas, shapes and dtypes), plus a thin registered class here whose parameters round-trip through `get_config()`
(so a `.keras` file reloads without custom_objects). For 2-channel instance targets (foreground + contour or distance channel, `data.targets`), `InstanceTargetLoss` applies one of
these to channel 0 (`loss_for_target`).

| name                | formula (per sample)                                     | from                   |
|---------------------|----------------------------------------------------------|------------------------|
| bce                 | BCE, optional positive weight                            | —                      |
| weighted_bce        | BCE with pos_weight=10 (10:1 class ratio)                | Das et al. 2025 §3.4.1 |
| dice                | 1 − soft Dice                                            | Milletari 2016         |
| bce_dice            | bce_weight·BCE + dice_weight·Dice (training default)     | Das et al. 2025 §3.5   |
| focal               | α-balanced focal BCE (α=0.25, γ=2)                       | Lin 2017               |
| boundary            | normalised distance of Laplacian edge maps               | Das et al. 2025 §3.5   |
| focal_dice_boundary | 0.3·focal + 0.6·Dice + 0.1·boundary                      | Das et al. 2025 §3.5   |
| tversky             | 1 − TP/(TP + α·FP + β·FN)                                | Salehi 2017            |
| focal_tversky       | (1 − Tversky index)^γ                                    | Abraham 2019           |
| wbce_tversky        | weighted BCE + Tversky                                   | Henrion et al. 2025    |
| dynamic_threshold   | per patch by predicted foreground: BCE / BCE+TL / TL+FTL | Chen et al. 2025 §2.3  |
| topk_bce_dice       | mean BCE of the top-K hardest pixels + Dice              | Beker et al. §5        |

Why these and not `keras.losses.Dice` / `keras.losses.Tversky`: see `loss_functions`.
"""
from __future__ import annotations

import keras
from keras import ops

from .loss_functions import (  # noqa: F401  (re-exported: `losses.bce` etc. are the public formulas)
    bce, boundary, dynamic_threshold, focal, focal_tversky, foreground_fraction, mse, soft_dice, topk_bce, tversky,
    tversky_index)

LOSS_REGISTRY: dict[str, type] = {}


def register_loss(name: str):
    """Class decorator: registers with Keras serialisation (package cellseg_tf) and in our name registry."""
    def deco(cls):
        cls = keras.saving.register_keras_serializable(package="cellseg_tf")(cls)
        LOSS_REGISTRY[name] = cls
        cls.registry_name = name
        return cls
    return deco


def available_losses() -> list[str]:
    """Sorted names accepted by `get_loss`."""
    return sorted(LOSS_REGISTRY)


def get_loss(name: str, **params) -> keras.losses.Loss:
    """Build a registered loss by name, e.g. `get_loss("tversky", alpha=0.3, beta=0.7)`.

    Raises KeyError for an unknown name and TypeError for an unknown parameter (both list what is accepted).
    """
    if name not in LOSS_REGISTRY:
        raise KeyError(f"unknown loss {name!r}; available: {', '.join(available_losses())}")
    return LOSS_REGISTRY[name](**params)


# ----------------------------------------------------------------------------------------------------------------
# Registered Loss classes (thin wrappers carrying their parameters)
# ----------------------------------------------------------------------------------------------------------------

class _ParamLoss(keras.losses.Loss):
    """Base: stores keyword parameters (defaults in `_params`) and returns them in get_config(); `call` applies
    `formula(y_true, y_pred, **params)` (subclasses combining several formulas override `call`)."""

    _params: dict = {}
    formula = None

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None, **params):
        super().__init__(name=name or getattr(self, "registry_name", type(self).__name__.lower()),
                         reduction=reduction, dtype="float32")
        unknown = set(params) - set(self._params)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown parameter(s) {sorted(unknown)}; "
                            f"accepted: {sorted(self._params)}")
        self.params = {**self._params, **params}

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("dtype", None)
        return {**cfg, **self.params}

    def call(self, y_true, y_pred):
        return type(self).formula(y_true, y_pred, **self.params)


@register_loss("bce")
class BCELoss(_ParamLoss):
    """Binary cross-entropy; `pos_weight` > 1 up-weights the foreground class (see `bce`)."""

    _params = {"pos_weight": 1.0}
    formula = staticmethod(bce)


@register_loss("weighted_bce")
class WeightedBCELoss(BCELoss):
    """Weighted BCE with a 10:1 foreground:background weight by default (Das et al. 2025 §3.4.1; see `bce`)."""

    _params = {"pos_weight": 10.0}


@register_loss("dice")
class DiceLoss(_ParamLoss):
    """Soft Dice loss (see `soft_dice`)."""

    _params = {"smooth": 1.0}
    formula = staticmethod(soft_dice)


@register_loss("bce_dice")
class BCEDiceLoss(_ParamLoss):
    """bce_weight·BCE + dice_weight·soft Dice: pixel-wise calibration plus overlap, robust to class imbalance.

    The training default (Das et al. 2025 §3.5 "BCE Dice loss").
    """

    _params = {"bce_weight": 1.0, "dice_weight": 1.0, "smooth": 1.0, "pos_weight": 1.0}

    def call(self, y_true, y_pred):
        p = self.params
        return (p["bce_weight"] * bce(y_true, y_pred, p["pos_weight"])
                + p["dice_weight"] * soft_dice(y_true, y_pred, p["smooth"]))


@register_loss("focal")
class FocalLoss(_ParamLoss):
    """α-balanced binary focal loss, α = 0.25, γ = 2 (see `focal`)."""

    _params = {"alpha": 0.25, "gamma": 2.0}
    formula = staticmethod(focal)


@register_loss("boundary")
class BoundaryLoss(_ParamLoss):
    """Laplacian edge-map boundary loss (see `boundary`); not a loss on its own (blind to inversion)."""

    _params: dict = {}
    formula = staticmethod(boundary)


@register_loss("focal_dice_boundary")
class FocalDiceBoundaryLoss(_ParamLoss):
    """Das et al. 2025 §3.5 composite: focal_weight·focal + dice_weight·Dice + boundary_weight·boundary
    (0.3 / 0.6 / 0.1)."""

    _params = {"focal_weight": 0.3, "dice_weight": 0.6, "boundary_weight": 0.1, "alpha": 0.25, "gamma": 2.0,
               "smooth": 1.0}

    def call(self, y_true, y_pred):
        p = self.params
        return (p["focal_weight"] * focal(y_true, y_pred, p["alpha"], p["gamma"])
                + p["dice_weight"] * soft_dice(y_true, y_pred, p["smooth"])
                + p["boundary_weight"] * boundary(y_true, y_pred))


@register_loss("tversky")
class TverskyLoss(_ParamLoss):
    """Tversky loss 1 − TP/(TP + α·FP + β·FN), α = 0.3, β = 0.7 (see `tversky`)."""

    _params = {"alpha": 0.3, "beta": 0.7, "smooth": 1.0}
    formula = staticmethod(tversky)


@register_loss("focal_tversky")
class FocalTverskyLoss(_ParamLoss):
    """Focal Tversky loss (1 − TI)^γ, γ = 0.75 (see `focal_tversky`)."""

    _params = {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "smooth": 1.0}
    formula = staticmethod(focal_tversky)


@register_loss("wbce_tversky")
class WBCETverskyLoss(_ParamLoss):
    """Henrion et al. 2025: bce_weight·weighted BCE (pos_weight) + tversky_weight·Tversky (β > α: misses cost more).

    The seed gives no numbers; defaults pos_weight = 10 (foreground ≈ 7 % of pixels there), α = 0.3, β = 0.7.
    """

    _params = {"pos_weight": 10.0, "alpha": 0.3, "beta": 0.7, "smooth": 1.0, "bce_weight": 1.0,
               "tversky_weight": 1.0}

    def call(self, y_true, y_pred):
        p = self.params
        return (p["bce_weight"] * bce(y_true, y_pred, p["pos_weight"])
                + p["tversky_weight"] * tversky(y_true, y_pred, p["alpha"], p["beta"], p["smooth"]))


@register_loss("dynamic_threshold")
class DynamicThresholdLoss(_ParamLoss):
    """Chen et al. 2025 §2.3 per-patch loss choice: BCE / BCE + Tversky / Tversky + focal Tversky
    (see `dynamic_threshold`)."""

    _params = {"small_roi_fraction": 0.0625, "background_fraction": 0.0, "threshold": 0.5, "alpha": 0.7,
               "beta": 0.3, "gamma": 0.75, "smooth": 1.0, "reference": "prediction"}
    formula = staticmethod(dynamic_threshold)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.params["reference"] not in ("prediction", "truth"):
            raise ValueError(f"reference must be 'prediction' or 'truth', got {self.params['reference']!r}")


@register_loss("topk_bce_dice")
class TopKBCEDiceLoss(_ParamLoss):
    """Beker et al. §5: topk_weight·(mean BCE of the top k_fraction hardest pixels) + dice_weight·soft Dice
    (global term).

    Beker et al. found K too small does not converge without the global term; its best K = 6000 of 256² ≈ 0.09.
    """

    _params = {"k_fraction": 0.1, "topk_weight": 1.0, "dice_weight": 1.0, "pos_weight": 1.0, "smooth": 1.0}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(self.params["k_fraction"]) <= 1.0:
            raise ValueError(f"k_fraction must be in (0, 1], got {self.params['k_fraction']}")

    def call(self, y_true, y_pred):
        p = self.params
        return (p["topk_weight"] * topk_bce(y_true, y_pred, p["k_fraction"], p["pos_weight"])
                + p["dice_weight"] * soft_dice(y_true, y_pred, p["smooth"]))


# ----------------------------------------------------------------------------------------------------------------
# Instance targets: foreground channel + one auxiliary channel (cellseg_tf.data.targets)
# ----------------------------------------------------------------------------------------------------------------

AUX_LOSSES = {"bce": bce, "mse": mse}   # per-sample losses for the auxiliary channel of an instance target


@keras.saving.register_keras_serializable(package="cellseg_tf")
class InstanceTargetLoss(_ParamLoss):
    """Loss for 2-channel instance targets: base(ch0) + aux_weight · aux(ch1), per sample, in float32.

    A wrapper around a pixel loss, not one itself: it is Keras-registered (a compiled `.keras` file reloads) but not
    in LOSS_REGISTRY, because the target, not `--loss`, chooses it (`loss_for_target`).

    y_true, y_pred: (B, H, W, 2); channel 0 the foreground (mask / probability), channel 1 the contour band or the
    normalised distance map of `data.targets` (`kind` records which). `base` is any other registered loss with
    `base_options` (the configured pixel loss, default bce_dice) and sees channel 0 only, so foreground training is
    what the binary target trains. `aux` is "bce" (default: cross-entropy with the soft target for distance maps;
    its gradient on the logit is p − t, as strong near 0 and 1 as in between) or "mse" (squared error of the
    sigmoid, weaker where the sigmoid saturates).
    """

    _params = {"kind": "distance", "base": "bce_dice", "base_options": {}, "aux": "bce", "aux_weight": 1.0}
    registry_name = "instance_target"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        p = self.params
        if p["kind"] not in ("contour", "distance"):
            raise ValueError(f"kind must be 'contour' or 'distance', got {p['kind']!r}")
        if p["aux"] not in AUX_LOSSES:
            raise ValueError(f"aux must be one of {', '.join(AUX_LOSSES)}, got {p['aux']!r}")
        if float(p["aux_weight"]) < 0:
            raise ValueError(f"aux_weight must be >= 0, got {p['aux_weight']}")
        p["base_options"] = dict(p["base_options"] or {})
        self._base = get_loss(p["base"], **p["base_options"])

    def call(self, y_true, y_pred):
        p = self.params
        fg = self._base.call(y_true[..., :1], y_pred[..., :1])
        aux = AUX_LOSSES[p["aux"]](y_true[..., 1:2], y_pred[..., 1:2])
        return ops.cast(fg, "float32") + float(p["aux_weight"]) * aux


def loss_for_target(kind: str, base: str = "bce_dice", base_options: dict | None = None,
                    aux_weight: float = 1.0) -> keras.losses.Loss:
    """The training loss of target `kind`: the registered `base` loss itself for "binary", else an
    `InstanceTargetLoss` applying `base` to the foreground channel and BCE × aux_weight to the second channel."""
    if kind == "binary":
        return get_loss(base, **(base_options or {}))
    return InstanceTargetLoss(kind=kind, base=base, base_options=dict(base_options or {}),
                              aux_weight=float(aux_weight))
