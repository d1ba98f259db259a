"""Segmentation losses as Keras 3 Loss classes behind a registry: `get_loss(name, **params)`, `available_losses()`.

Each loss is a plain function `f(y_true, y_pred, **params) -> (B,)` computed in float32 (inputs are cast first, so
float16 predictions under mixed_float16 give the same value), plus a thin registered class whose parameters round-trip
through `get_config()` (so a `.keras` file reloads without custom_objects).

Shapes: y_true (B, H, W, 1) in {0, 1}; y_pred (B, H, W, 1) probabilities (sigmoid outputs, not logits). Any rank
>= 2 works: every reduction is over all non-batch axes. For 2-channel instance targets (foreground + contour or
distance channel, `data.targets`), `InstanceTargetLoss` applies one of these to channel 0 (`loss_for_target`).
Probabilities are clipped to [1e-7, 1 - 1e-7] before logs.

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

Why not `keras.losses.Dice` / `keras.losses.Tversky` directly: they have no smoothing term, so an empty truth with an
empty prediction (a background patch, common in few-shot tiling) scores the *maximum* loss 1; and in Keras <= 3.15
`tversky` applies α to false negatives and β to false positives, the reverse of its docstring and of Salehi et al.
(fixed upstream in keras-team/keras#23333), so its meaning would depend on the installed Keras. The focal term does
wrap `keras.losses.binary_focal_crossentropy`.
"""
from __future__ import annotations

import math

import keras
from keras import ops

_EPS = 1e-7
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
# Plain functions: (y_true, y_pred, **params) -> (B,) float32
# ----------------------------------------------------------------------------------------------------------------

def _f32(y_true, y_pred):
    """Cast both to float32 (mixed_float16 safe) and clip probabilities away from 0 and 1."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.clip(ops.cast(y_pred, "float32"), _EPS, 1.0 - _EPS)
    return y_true, y_pred


def _axes(x) -> tuple[int, ...]:
    """All non-batch axes."""
    return tuple(range(1, len(x.shape)))


def bce(y_true, y_pred, pos_weight: float = 1.0):
    """Mean (weighted) binary cross-entropy per sample.

    BCE = −mean_i [w·t_i·log p_i + (1 − t_i)·log(1 − p_i)], w = pos_weight (w > 1 up-weights the foreground,
    e.g. the 10:1 of Das et al. 2025). Minimum 0 only when w-weighted errors vanish (p → t).
    """
    t, p = _f32(y_true, y_pred)
    ll = pos_weight * t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p)
    return -ops.mean(ll, axis=_axes(t))


def soft_dice(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice loss per sample: 1 − (2·Σ t·p + s) / (Σ t + Σ p + s) (Milletari et al. 2016, V-Net).

    The smoothing s makes empty truth + empty prediction a perfect 0 (and keeps gradients finite).
    """
    t, p = _f32(y_true, y_pred)
    ax = _axes(t)
    inter = ops.sum(t * p, axis=ax)
    denom = ops.sum(t, axis=ax) + ops.sum(p, axis=ax)
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


def focal(y_true, y_pred, alpha: float | None = 0.25, gamma: float = 2.0):
    """α-balanced binary focal loss per sample (Lin et al. 2017, RetinaNet), via keras.losses.binary_focal_crossentropy.

    FL = mean_i [w_i · (1 − p_t,i)^γ · (−log p_t,i)], p_t = p if t = 1 else 1 − p, w = α for foreground and 1 − α for
    background (no weighting if alpha is None). Das et al. 2025 use α = 0.25, γ = 2.
    """
    t, p = _f32(y_true, y_pred)
    per_pixel = keras.losses.binary_focal_crossentropy(
        t, p, apply_class_balancing=alpha is not None, alpha=0.25 if alpha is None else float(alpha),
        gamma=float(gamma), axis=-1)
    return ops.mean(per_pixel, axis=tuple(range(1, len(per_pixel.shape))))


def _laplacian_edges(x):
    """|4-neighbour Laplacian| / 4 of a (B, H, W, C) map, symmetric padding (no edges at the image border): [0, 1]."""
    xp = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    lap = (xp[:, :-2, 1:-1] + xp[:, 2:, 1:-1] + xp[:, 1:-1, :-2] + xp[:, 1:-1, 2:]) - 4.0 * x
    return ops.abs(lap) * 0.25


def boundary(y_true, y_pred):
    """Laplacian boundary loss per sample (Das et al. 2025 §3.5: "boundary loss ... through Laplacian-based edge
    detection").

    E(x) = |∇²x| / 4 (3×3 four-neighbour Laplacian, symmetric padding) is the edge map of a mask or a probability map;
    L = Σ (E(p) − E(t))² / (Σ E(p)² + Σ E(t)² + ε), in [0, 1]: 0 when the edge maps agree, 1 when they are disjoint
    (or when p is edge-free, e.g. uniform, while t has edges). The seed gives no exact formula; this normalisation is
    ours so the term has the scale of Dice. Note an edge map cannot tell inside from outside: an inverted mask has
    the same edges (loss 0), which is why it is only a 0.1-weighted term of `focal_dice_boundary`.
    y_true, y_pred: (B, H, W, C).
    """
    t, p = _f32(y_true, y_pred)
    et, ep = _laplacian_edges(t), _laplacian_edges(p)
    ax = _axes(t)
    num = ops.sum(ops.square(ep - et), axis=ax)
    den = ops.sum(ops.square(ep), axis=ax) + ops.sum(ops.square(et), axis=ax)
    return num / (den + _EPS)


def tversky_index(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """Soft Tversky index per sample: (TP + s) / (TP + α·FP + β·FN + s), TP = Σ t·p, FP = Σ (1−t)·p, FN = Σ t·(1−p).

    α weights false positives, β false negatives (Salehi et al. 2017); α = β = 0.5 is Dice, α = β = 1 is IoU.
    """
    t, p = _f32(y_true, y_pred)
    ax = _axes(t)
    tp = ops.sum(t * p, axis=ax)
    fp = ops.sum((1.0 - t) * p, axis=ax)
    fn = ops.sum(t * (1.0 - p), axis=ax)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def tversky(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0):
    """Tversky loss per sample: 1 − TI (Salehi et al. 2017, arXiv:1706.05721); β > α penalises misses more."""
    return 1.0 - tversky_index(y_true, y_pred, alpha, beta, smooth)


def focal_tversky(y_true, y_pred, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = 1.0):
    """Focal Tversky loss per sample: (1 − TI)^γ (Abraham & Khan 2019, arXiv:1810.07842).

    The paper writes the exponent as 1/γ with γ = 4/3; `gamma` here is the exponent itself (default 0.75 = 3/4).
    γ < 1 raises the loss (and its gradient) of nearly-correct patches. 1 − TI is floored at 1e-7 so the gradient of
    x^γ stays finite at a perfect prediction.
    """
    base = ops.maximum(1.0 - tversky_index(y_true, y_pred, alpha, beta, smooth), _EPS)
    return ops.power(base, gamma)


def topk_bce(y_true, y_pred, k_fraction: float = 0.1, pos_weight: float = 1.0):
    """Online hard-pixel mining (Beker et al. §5): mean BCE over the K = ⌈k_fraction·N⌉ highest-loss pixels of
    each sample.

    N = pixels per sample. Gradients flow only through the selected pixels (the selection itself is not
    differentiated). k_fraction = 1 is plain BCE.
    """
    t, p = _f32(y_true, y_pred)
    pixel = -(pos_weight * t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    flat = ops.reshape(pixel, (ops.shape(pixel)[0], -1))
    n = flat.shape[-1]
    if n is not None:  # static size: partial sort
        k = max(1, min(n, math.ceil(k_fraction * n - 1e-9)))
        return ops.mean(ops.top_k(flat, k, sorted=False)[0], axis=-1)
    n_dyn = ops.cast(ops.shape(flat)[-1], "float32")
    k = ops.maximum(ops.ceil(k_fraction * n_dyn), 1.0)
    desc = -ops.sort(-flat, axis=-1)
    keep = ops.cast(ops.cast(ops.arange(ops.shape(flat)[-1]), "float32") < k, "float32")
    return ops.sum(desc * keep, axis=-1) / k


def foreground_fraction(y_pred, threshold: float = 0.5):
    """Share of pixels with p > threshold per sample, (B,) float32, not differentiated (a selector, not a loss)."""
    p = ops.cast(ops.stop_gradient(y_pred), "float32")
    return ops.mean(ops.cast(p > threshold, "float32"), axis=_axes(p))


def dynamic_threshold(y_true, y_pred, small_roi_fraction: float = 0.0625, background_fraction: float = 0.0,
                      threshold: float = 0.5, alpha: float = 0.7, beta: float = 0.3, gamma: float = 0.75,
                      smooth: float = 1.0, reference: str = "prediction"):
    """Chen et al. 2025 §2.3 (PAULow): choose the loss per patch from its foreground fraction f.

    f = share of pixels > `threshold` in the prediction (reference="prediction", as the paper says) or in the truth
    (reference="truth"). Then
      f <= background_fraction            (background patch) : BCE
      background_fraction < f < 6.25 %    (small ROI)        : BCE + Tversky
      f >= small_roi_fraction             (large ROI)        : Tversky + focal Tversky
    The paper publishes no α/β/γ; the defaults α = 0.7 (false positives), β = 0.3 follow its stated aim for small
    ROI patches ("penalize false positives while reinforcing true negatives") and γ = 0.75 follows Abraham & Khan.
    """
    if reference not in ("prediction", "truth"):
        raise ValueError(f"reference must be 'prediction' or 'truth', got {reference!r}")
    frac = foreground_fraction(y_pred if reference == "prediction" else y_true, threshold)
    l_bce = bce(y_true, y_pred)
    l_tv = tversky(y_true, y_pred, alpha, beta, smooth)
    l_ftv = focal_tversky(y_true, y_pred, alpha, beta, gamma, smooth)
    small = l_bce + l_tv
    large = l_tv + l_ftv
    return ops.where(frac <= background_fraction, l_bce, ops.where(frac < small_roi_fraction, small, large))


# ----------------------------------------------------------------------------------------------------------------
# Registered Loss classes (thin wrappers carrying their parameters)
# ----------------------------------------------------------------------------------------------------------------

class _ParamLoss(keras.losses.Loss):
    """Base: stores keyword parameters (defaults in `_params`) and returns them in get_config()."""

    _params: dict = {}

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


@register_loss("bce")
class BCELoss(_ParamLoss):
    """Binary cross-entropy; `pos_weight` > 1 up-weights the foreground class (see `bce`)."""

    _params = {"pos_weight": 1.0}

    def call(self, y_true, y_pred):
        return bce(y_true, y_pred, self.params["pos_weight"])


@register_loss("weighted_bce")
class WeightedBCELoss(BCELoss):
    """Weighted BCE with a 10:1 foreground:background weight by default (Das et al. 2025 §3.4.1; see `bce`)."""

    _params = {"pos_weight": 10.0}


@register_loss("dice")
class DiceLoss(_ParamLoss):
    """Soft Dice loss (see `soft_dice`)."""

    _params = {"smooth": 1.0}

    def call(self, y_true, y_pred):
        return soft_dice(y_true, y_pred, self.params["smooth"])


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

    def call(self, y_true, y_pred):
        return focal(y_true, y_pred, self.params["alpha"], self.params["gamma"])


@register_loss("boundary")
class BoundaryLoss(_ParamLoss):
    """Laplacian edge-map boundary loss (see `boundary`); not a loss on its own (blind to inversion)."""

    _params: dict = {}

    def call(self, y_true, y_pred):
        return boundary(y_true, y_pred)


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

    def call(self, y_true, y_pred):
        p = self.params
        return tversky(y_true, y_pred, p["alpha"], p["beta"], p["smooth"])


@register_loss("focal_tversky")
class FocalTverskyLoss(_ParamLoss):
    """Focal Tversky loss (1 − TI)^γ, γ = 0.75 (see `focal_tversky`)."""

    _params = {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "smooth": 1.0}

    def call(self, y_true, y_pred):
        p = self.params
        return focal_tversky(y_true, y_pred, p["alpha"], p["beta"], p["gamma"], p["smooth"])


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

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.params["reference"] not in ("prediction", "truth"):
            raise ValueError(f"reference must be 'prediction' or 'truth', got {self.params['reference']!r}")

    def call(self, y_true, y_pred):
        return dynamic_threshold(y_true, y_pred, **self.params)


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

def mse(y_true, y_pred):
    """Mean squared error per sample between a target map in [0, 1] and a probability map (float32)."""
    t, p = _f32(y_true, y_pred)
    return ops.mean(ops.square(p - t), axis=_axes(t))


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
