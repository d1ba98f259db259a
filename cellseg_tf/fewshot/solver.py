"""The perceptron of few-shot adaptation: logistic regression, then BFGS on soft Dice, on sampled pixel features.

Pure numpy/scipy, no Keras: pixel features in, weights out. Notation: X (n, d) pixel features, y (n,) {0, 1}
labels, s (n,) positive sample weights (each sampled pixel stands for s pixels of the support images, so weighted
sums estimate sums over the whole images), θ = (w (d,), b) the perceptron, z = X·w + b its logits.

1. Standardise: each feature to zero weighted mean and unit weighted standard deviation (constant features keep
   scale 1 and end with weight 0 under the L2 penalty).
2. Logistic regression with L2: minimise Σ s·(softplus(z) − y·z) / Σ s + λ‖w‖² (scipy L-BFGS-B).
3. From that start, the paper's BFGS step on the soft Dice loss
   1 − (2·Σ s·p·y + ε) / (Σ s·p + Σ s·y + ε) + λ‖w − a‖², p = σ(z), where the penalty's centre a is 0
   (`dice_anchor="zero"`, the paper's L2) or the logistic weights (`"logistic"`: the Dice step moves away from the
   logistic solution only as far as the support Dice pays for; measured and not adopted, docs/FEWSHOT.md). By
   default the Dice is each support image's, averaged over the images (`dice_average="image"`), as the
   evaluation scores a model (mean per-image Dice); "pooled" sums over all support pixels at once, where images
   with much foreground outweigh sparse ones and false positives on sparse images cost little. Run with scipy's
   limited-memory BFGS (`scipy.optimize.minimize(method="L-BFGS-B")`, analytic gradient, stop at gradient
   max-norm < 1e-5 as in the paper). Full BFGS (method="BFGS") reaches the same optimum, but on real features it
   needed 3–5× the iterations (e.g. 394 against 73 at the same loss and Dice); the results and the report call
   this step "bfgs" after the paper.
4. λ: each candidate is fitted (steps 2–3) on part of the support pixels and scored by the hard Dice (p > 0.5,
   averaged the same way) on the held-out rest; the best (ties: the larger λ) is refitted on all support pixels.
   The held-out part is whole images when there are at least two (`holdout_mask`), else a random quarter of the
   pixels; the candidate fits use at most SELECTION_PIXELS of the rest (a seeded subsample), which keeps the
   search to seconds, and run side by side, one per usable core (threads: the scores are the same on any number).
5. The BFGS solution replaces the logistic one only if its support Dice is not lower (`Solution.chosen`).
Finally the standardisation is folded into the weights (`fold_standardization`), so the saved 1×1 convolution
reads raw features.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit

DEFAULT_LAMBDAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
DICE_METHOD = "L-BFGS-B"  # scipy method of the BFGS step on Dice
BFGS_GTOL = 1e-5          # gradient max-norm at which the BFGS step stops (the paper's criterion)
BFGS_MAXITER = 500
LOGISTIC_MAXITER = 100      # the logistic fit is only BFGS's starting point: a close one is enough
HOLDOUT_FRACTION = 0.25
SELECTION_PIXELS = 20_000  # λ candidates are fitted on at most this many pixels (a seeded subsample)
DICE_AVERAGES = ("image", "pooled")  # Dice of the BFGS step: mean over support images | over all support pixels
DEFAULT_DICE_AVERAGE = "image"       # matches the evaluation (mean per-image Dice); docs/FEWSHOT.md, measured
PENALTIES = {"zero": "lambda*|W|^2", "logistic": "lambda*|W - W_logistic|^2"}  # each anchor's penalty, as reported
DICE_ANCHORS = tuple(PENALTIES)      # centre of the BFGS step's L2 penalty: 0 | the logistic weights
DEFAULT_DICE_ANCHOR = "zero"         # the paper's
CHOICES = {"dice_average": DICE_AVERAGES, "dice_anchor": DICE_ANCHORS}  # the solver's named options
DICE_EPS = 1e-6                      # smoothing of the soft Dice: (2·inter + ε) / (union + ε)


@dataclass
class Standardization:
    """Per-feature weighted mean and scale, each (d,) float64: z = (x − mean) / scale."""

    mean: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / self.scale


def standardization(x: np.ndarray, s: np.ndarray, eps: float = 1e-8) -> Standardization:
    """Weighted mean and standard deviation of the columns of x (n, d); a constant column gets scale 1."""
    s = np.asarray(s, np.float64) / np.sum(s)
    mean = s @ x
    std = np.sqrt(np.maximum(s @ (x - mean) ** 2, 0.0))
    return Standardization(mean, np.where(std > eps, std, 1.0))


def _logits(theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    return z @ theta[:-1] + theta[-1]


def logistic_loss(theta: np.ndarray, z: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float):
    """Weighted mean cross-entropy + λ‖w‖² and its gradient (d + 1,); θ = (w, b)."""
    t = _logits(theta, z)
    total = s.sum()
    loss = np.sum(s * (np.logaddexp(0.0, t) - y * t)) / total + lam * theta[:-1] @ theta[:-1]
    r = s * (expit(t) - y) / total
    grad = np.append(z.T @ r + 2 * lam * theta[:-1], r.sum())
    return loss, grad


def _image_ids(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """(n,) contiguous image index 0..G-1 and G; groups=None: every pixel in one image (pooled Dice)."""
    if groups is None:
        return np.zeros(n, np.int64), 1
    ids, inverse = np.unique(groups, return_inverse=True)
    return inverse.reshape(-1), len(ids)


def _dice_terms(p: np.ndarray, y: np.ndarray, s: np.ndarray, groups: np.ndarray | None, eps: float):
    """Per image: (inter + e/2, union + e) with weighted sums, e = eps·(image weight); plus the image ids and G."""
    g, n_images = _image_ids(groups, len(y))
    e = eps * np.bincount(g, s, n_images)
    inter = np.bincount(g, s * p * y, n_images) + e / 2
    union = np.bincount(g, s * p, n_images) + np.bincount(g, s * y, n_images) + e
    return inter, union, g, n_images


def soft_dice(theta: np.ndarray, z: np.ndarray, y: np.ndarray, s: np.ndarray, groups: np.ndarray | None = None,
              eps: float = DICE_EPS) -> float:
    """Weighted soft Dice of p = σ(z·w + b) against y, in [0, 1]: the mean over images (`groups`), or pooled."""
    inter, union, _, _ = _dice_terms(expit(_logits(theta, z)), y, s, groups, eps)
    return float(np.mean(2 * inter / union))


def hard_dice(theta: np.ndarray, z: np.ndarray, y: np.ndarray, s: np.ndarray,
              groups: np.ndarray | None = None) -> float:
    """Weighted Dice of the binarised prediction (logit > 0, i.e. p > 0.5): the mean over images (`groups`), or
    pooled; an image where both are empty scores 1.0."""
    pred = (_logits(theta, z) > 0).astype(np.float64)
    g, n_images = _image_ids(groups, len(y))
    inter = np.bincount(g, s * pred * (y > 0), n_images)
    size = np.bincount(g, s * pred, n_images) + np.bincount(g, s * (y > 0), n_images)
    return float(np.mean(np.where(size > 0, 2 * inter / np.where(size > 0, size, 1.0), 1.0)))


def dice_loss(theta: np.ndarray, z: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float,
              groups: np.ndarray | None = None, eps: float = DICE_EPS, centre: np.ndarray | None = None):
    """1 − soft Dice (mean over images, or pooled when groups=None) + λ‖w − centre‖² (centre (d,), None: 0),
    and its gradient (d + 1,)."""
    p = expit(_logits(theta, z))
    inter, union, g, n_images = _dice_terms(p, y, s, groups, eps)
    d_dice_dp = s * (2 * y * union[g] - 2 * inter[g]) / union[g] ** 2 / n_images
    r = -d_dice_dp * p * (1 - p)                    # d loss / d logit
    dw = theta[:-1] if centre is None else theta[:-1] - centre
    grad = np.append(z.T @ r + 2 * lam * dw, r.sum())
    return 1.0 - float(np.mean(2 * inter / union)) + lam * dw @ dw, grad


def fit_logistic(z: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float) -> np.ndarray:
    """θ (d + 1,) minimising `logistic_loss` from zero weights and the prior's log-odds as intercept."""
    prior = np.clip(np.sum(s * y) / s.sum(), 1e-6, 1 - 1e-6)
    theta0 = np.append(np.zeros(z.shape[1]), np.log(prior / (1 - prior)))
    res = optimize.minimize(logistic_loss, theta0, args=(z, y, s, lam), jac=True, method="L-BFGS-B",
                            options={"maxiter": LOGISTIC_MAXITER})
    return res.x


def fit_dice(z: np.ndarray, y: np.ndarray, s: np.ndarray, lam: float, theta0: np.ndarray,
             groups: np.ndarray | None = None, anchor: str = DEFAULT_DICE_ANCHOR) -> tuple[np.ndarray, int]:
    """(θ, iterations) minimising `dice_loss` (per-image mean over `groups`, or pooled) from θ0 with scipy's
    `DICE_METHOD` (stops on the gradient norm); anchor "logistic" centres the penalty on θ0's weights."""
    centre = np.array(theta0[:-1], np.float64) if check_choice("dice_anchor", anchor) == "logistic" else None
    res = optimize.minimize(dice_loss, theta0, args=(z, y, s, lam, groups, DICE_EPS, centre), jac=True,
                            method=DICE_METHOD, options={"gtol": BFGS_GTOL, "ftol": 1e-15, "maxiter": BFGS_MAXITER})
    return res.x, int(res.nit)


def holdout_mask(groups: np.ndarray, seed: int, fraction: float = HOLDOUT_FRACTION) -> np.ndarray:
    """(n,) bool, True = held out: whole groups (images) when there are >= 2, else a random `fraction` of pixels."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    if len(ids) >= 2:
        n_out = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
        return np.isin(groups, rng.choice(ids, n_out, replace=False))
    return rng.random(len(groups)) < fraction


@dataclass
class Solution:
    """Perceptron weights on the standardised features and how they were found.

    theta_logistic / theta_bfgs: (d + 1,) = (w, b) on standardised features; chosen: "bfgs" | "logistic".
    Dice values are weighted estimates over the support pixels (hard: p > 0.5).
    """

    standardization: Standardization
    lam: float
    theta_logistic: np.ndarray
    theta_bfgs: np.ndarray
    chosen: str
    dice_logistic: float
    dice_bfgs: float
    soft_dice_logistic: float
    soft_dice_bfgs: float
    bfgs_iterations: int
    lambda_scores: dict = field(default_factory=dict)   # λ -> held-out hard Dice (logistic + BFGS)
    dice_average: str = DEFAULT_DICE_AVERAGE             # "image" | "pooled": how every Dice here is averaged
    dice_anchor: str = DEFAULT_DICE_ANCHOR               # "zero" | "logistic": centre of the BFGS step's penalty

    @property
    def theta(self) -> np.ndarray:
        return self.theta_bfgs if self.chosen == "bfgs" else self.theta_logistic

    def kernel_bias(self, which: str | None = None) -> tuple[np.ndarray, float]:
        """(kernel (d,), bias) on RAW features for the chosen solution, or `which` = "logistic" | "bfgs"."""
        theta = {"logistic": self.theta_logistic, "bfgs": self.theta_bfgs, None: self.theta}[which]
        return fold_standardization(theta, self.standardization)


def fold_standardization(theta: np.ndarray, st: Standardization) -> tuple[np.ndarray, float]:
    """θ on standardised features -> (kernel (d,), bias) with x·kernel + bias == ((x − mean)/scale)·w + b."""
    kernel = theta[:-1] / st.scale
    return kernel, float(theta[-1] - st.mean @ kernel)


def single_threaded_blas():
    """A context running numpy's BLAS on one thread (through threadpoolctl when it is installed).

    The solver's products are small ((n, d) by (d,), d ~ 100): on a 2-core machine, OpenBLAS threads spinning
    against TensorFlow's thread pools made `solve` 4–5× slower (26 s against 5.5 s for 40 000 pixels × 78 features).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_choice(name: str, value: str) -> str:
    """`value` if it is one of the solver option `name`'s CHOICES, else a ValueError listing them."""
    if value not in CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    return value


def solve(x: np.ndarray, y: np.ndarray, s: np.ndarray, groups: np.ndarray, lambdas=DEFAULT_LAMBDAS,
          seed: int = 0, dice_average: str = DEFAULT_DICE_AVERAGE,
          dice_anchor: str = DEFAULT_DICE_ANCHOR) -> Solution:
    """Steps 1–5 of the module docstring. x: (n, d) features, y: (n,) {0, 1}, s: (n,) > 0, groups: (n,) image ids;
    dice_average: "image" (mean of the support images' Dice) | "pooled" (one Dice over all support pixels);
    dice_anchor: centre of the BFGS step's L2 penalty, "zero" | "logistic" (the logistic weights)."""
    check_choice("dice_average", dice_average)
    check_choice("dice_anchor", dice_anchor)
    with single_threaded_blas():
        return _solve(x, y, s, groups, lambdas, seed, dice_average, dice_anchor)


def _solve(x: np.ndarray, y: np.ndarray, s: np.ndarray, groups: np.ndarray, lambdas, seed: int,
           dice_average: str, dice_anchor: str) -> Solution:
    y = np.asarray(y, np.float64)
    s = np.asarray(s, np.float64)
    if not (y > 0).any() or (y > 0).all():
        raise ValueError("the support pixels need both foreground and background")
    lambdas = sorted({float(v) for v in lambdas})
    if not lambdas or min(lambdas) < 0:
        raise ValueError(f"lambdas must be non-negative numbers, got {lambdas}")
    # the images over which Dice is averaged: the support images, or all pixels as one
    per = np.asarray(groups) if dice_average == "image" else np.zeros(len(y), np.int64)
    st = standardization(np.asarray(x, np.float64), s)
    z = st.apply(x)
    scores: dict[float, float] = {}
    if len(lambdas) > 1:
        val = holdout_mask(groups, seed)
        fit = np.flatnonzero(~val)
        if len(fit) > SELECTION_PIXELS:
            fit = np.sort(np.random.default_rng(seed + 1).choice(fit, SELECTION_PIXELS, replace=False))
        zf, yf, sf, pf = z[fit], y[fit], s[fit], per[fit]

        def heldout_dice(lam: float) -> float:
            theta, _ = fit_dice(zf, yf, sf, lam, fit_logistic(zf, yf, sf, lam), pf, dice_anchor)
            return hard_dice(theta, z[val], y[val], s[val], per[val])

        if (yf > 0).any() and not (yf > 0).all():     # else no candidate can be fitted: all NaN, the largest λ
            # independent fits, one per core at a time (numpy and scipy release the GIL in their loops); each is
            # deterministic, so the scores do not depend on the number of workers
            with ThreadPoolExecutor(max_workers=min(len(lambdas), usable_cores())) as pool:
                scores = dict(zip(lambdas, pool.map(heldout_dice, lambdas)))
        else:
            scores = dict.fromkeys(lambdas, float("nan"))
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    lam = max(finite, key=lambda k: (finite[k], k)) if finite else lambdas[-1]
    theta_lr = fit_logistic(z, y, s, lam)
    theta_bfgs, iterations = fit_dice(z, y, s, lam, theta_lr, per, dice_anchor)
    dice_lr, dice_bfgs = hard_dice(theta_lr, z, y, s, per), hard_dice(theta_bfgs, z, y, s, per)
    return Solution(st, lam, theta_lr, theta_bfgs, "bfgs" if dice_bfgs >= dice_lr else "logistic", dice_lr,
                    dice_bfgs, soft_dice(theta_lr, z, y, s, per), soft_dice(theta_bfgs, z, y, s, per), iterations,
                    {float(k): float(v) for k, v in scores.items()}, dice_average, dice_anchor)
