"""Segmentation loss formulas as plain functions: `f(y_true, y_pred, **params) -> (B,)` float32 per-sample losses.

`losses` wraps each in a thin registered Keras class (the `get_loss` registry and its table of names and sources);
these functions are the math, written once with keras.ops so every backend computes the same thing.

Shapes: y_true (B, H, W, C) in {0, 1} (or a target map in [0, 1] for `mse`); y_pred (B, H, W, C) probabilities
(sigmoid outputs, not logits). Any rank >= 2 works: every reduction is over all non-batch axes. Both are cast to
float32 first (float16 predictions under mixed_float16 give the same value) and probabilities are clipped to
[1e-7, 1 - 1e-7] before logs.

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


def mse(y_true, y_pred):
    """Mean squared error per sample between a target map in [0, 1] and a probability map (float32)."""
    t, p = _f32(y_true, y_pred)
    return ops.mean(ops.square(p - t), axis=_axes(t))
