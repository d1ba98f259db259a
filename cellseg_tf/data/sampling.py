"""Where training patches are drawn from: rare-foreground oversampling and hard-example mining (Das et al. 2025 §3.5).

A `PatchIndex` lists candidate patch origins on a stride grid over the training masks and gives each a sampling
weight = class weight of its foreground fraction (Chen et al. 2025 §2.1 classes: background = no foreground pixel,
small ROI < 6.25 % of the patch, large ROI otherwise) × a hardness factor. A `HardMiner` scores (a subset of) the candidates
with the current model after each epoch (per-patch loss, no augmentation) and raises the weight of the hardest ones
for the next epoch; `hard_mining_callback` runs it from `model.fit`. Pure numpy except the Keras callback.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .tiling import axis_origins

FOREGROUND_CLASSES = ("background", "small", "large")
SMALL_ROI_FRACTION = 0.0625  # Chen et al. 2025: a patch with < 6.25 % foreground is a "small ROI" patch


def foreground_class(fraction: np.ndarray | float, small: float = SMALL_ROI_FRACTION) -> np.ndarray:
    """Foreground fraction(s) in [0, 1] -> class id(s): 0 background (no foreground), 1 small ROI, 2 large ROI."""
    f = np.asarray(fraction, dtype=np.float64)
    return np.where(f <= 0, 0, np.where(f < small, 1, 2)).astype(np.int8)


def parse_foreground_weights(weights: Mapping[str, float] | Sequence[float] | str | None) -> np.ndarray | None:
    """Class weights as a (3,) float64 array in FOREGROUND_CLASSES order; None stays None (no oversampling).

    Accepts {"background": 1, "small": 4, "large": 2}, (1, 4, 2), "1,4,2" or "background=1,small=4,large=2";
    classes left out of a mapping weigh 1.
    """
    if weights is None:
        return None
    if isinstance(weights, str):
        parts = [p.strip() for p in weights.split(",") if p.strip()]
        if parts and all("=" in p for p in parts):
            weights = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
        else:
            try:
                weights = [float(p) for p in parts]
            except ValueError:
                raise ValueError(f"foreground weights {weights!r}: use 'b,s,l' or "
                                 "'background=1,small=4,large=2'") from None
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(FOREGROUND_CLASSES)
        if unknown:
            raise ValueError(f"unknown foreground class(es) {sorted(unknown)}; use {', '.join(FOREGROUND_CLASSES)}")
        w = np.array([float(weights.get(c, 1.0)) for c in FOREGROUND_CLASSES])
    else:
        w = np.asarray(list(weights), dtype=np.float64)
        if w.shape != (3,):
            raise ValueError(f"foreground weights need 3 values (background, small, large), got {list(w)}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"foreground weights must be finite, >= 0 and not all 0, got {list(w)}")
    return w


class PatchIndex:
    """Candidate patch origins over masks (each (H, W) with H, W >= patch) and their sampling probabilities.

    Candidates lie on a grid of step `stride` (default patch // 4) plus the last position of each axis; a draw picks
    a candidate by weight and shifts it by up to stride - 1 px so every position stays reachable.
    Arrays (length N): image, y, x (int), fraction (float64), cls (int8), loss (float64, NaN = not yet scored).
    """

    def __init__(self, masks: Sequence[np.ndarray], patch: int, stride: int | None = None,
                 class_weights: Mapping[str, float] | Sequence[float] | str | None = None,
                 small: float = SMALL_ROI_FRACTION):
        if not masks:
            raise ValueError("no masks to index")
        self.patch = int(patch)
        self.stride = max(1, int(stride) if stride else self.patch // 4)
        self.shapes = [m.shape[:2] for m in masks]
        img, ys, xs, frac = [], [], [], []
        for k, m in enumerate(masks):
            h, w = m.shape[:2]
            if h < self.patch or w < self.patch:
                raise ValueError(f"mask {k} is {h}×{w}, smaller than the patch ({self.patch}); pad it first")
            oy = np.array(axis_origins(h, self.patch, self.patch - min(self.stride, self.patch)))
            ox = np.array(axis_origins(w, self.patch, self.patch - min(self.stride, self.patch)))
            sat = np.pad((np.asarray(m) > 0).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            gy, gx = np.meshgrid(oy, ox, indexing="ij")
            gy, gx = gy.ravel(), gx.ravel()
            p = self.patch
            fg = sat[gy + p, gx + p] - sat[gy, gx + p] - sat[gy + p, gx] + sat[gy, gx]
            img.append(np.full(gy.size, k)), ys.append(gy), xs.append(gx), frac.append(fg / float(p * p))
        self.image, self.y, self.x = np.concatenate(img), np.concatenate(ys), np.concatenate(xs)
        self.fraction = np.concatenate(frac)
        self.cls = foreground_class(self.fraction, small)
        self.loss = np.full(self.image.size, np.nan)
        self.hard_factor = np.ones(self.image.size)
        self.class_weights = parse_foreground_weights(class_weights)
        self._refresh()

    def __len__(self) -> int:
        return int(self.image.size)

    def class_counts(self) -> dict[str, int]:
        """Number of candidates per foreground class."""
        counts = np.bincount(self.cls, minlength=3)
        return {c: int(n) for c, n in zip(FOREGROUND_CLASSES, counts)}

    def class_shares(self) -> dict[str, float]:
        """Expected share of drawn patches per foreground class under the current weights."""
        shares = np.bincount(self.cls, weights=self.probabilities, minlength=3)
        return {c: float(s) for c, s in zip(FOREGROUND_CLASSES, shares)}

    def _refresh(self) -> None:
        w = np.ones(len(self)) if self.class_weights is None else self.class_weights[self.cls]
        w = w * self.hard_factor
        total = w.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError(f"foreground weights {self.class_weights} give every candidate patch weight 0 "
                             f"(classes present: {self.class_counts()})")
        probs = w / total
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0
        self.probabilities, self._cdf = probs, cdf  # swapped together; readers in other threads see either state

    def set_losses(self, indices: Iterable[int], losses: Iterable[float], mix: float = 0.5, power: float = 1.0) -> None:
        """Record per-patch losses and re-weight: factor = (1 - mix) + mix * (loss / mean loss) ** power.

        Candidates never scored count as average (factor 1). mix=0 turns mining off, mix=1 samples in proportion to
        loss alone.
        """
        if not 0 <= mix <= 1:
            raise ValueError(f"mix must be in [0, 1], got {mix}")
        idx = np.asarray(list(indices), dtype=np.int64)
        vals = np.asarray(list(losses), dtype=np.float64)
        if idx.shape != vals.shape:
            raise ValueError(f"{idx.size} indices but {vals.size} losses")
        if not np.isfinite(vals).all() or (vals < 0).any():
            raise ValueError("per-patch losses must be finite and >= 0")
        loss = self.loss.copy()
        loss[idx] = vals
        scored = np.isfinite(loss)
        mean = loss[scored].mean() if scored.any() else 0.0
        rel = np.ones(len(self))
        if mean > 0:
            rel[scored] = (loss[scored] / mean) ** power
        self.loss = loss
        self.hard_factor = (1.0 - mix) + mix * rel
        self._refresh()

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """One weighted draw -> (image index, y, x) of a patch origin (jittered within the stride)."""
        i = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self) - 1)
        k = int(self.image[i])
        h, w = self.shapes[k]
        y = min(int(self.y[i]) + int(rng.integers(0, self.stride)), h - self.patch)
        x = min(int(self.x[i]) + int(rng.integers(0, self.stride)), w - self.patch)
        return k, y, x


def per_patch_bce_dice(y_true: np.ndarray, y_pred: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(N, P, P, 1) masks and probabilities -> (N,) float64 per-patch BCE + (1 - soft Dice): the mining score."""
    t = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    p = np.clip(np.asarray(y_pred, np.float64).reshape(len(y_pred), -1), eps, 1 - eps)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)
    dice = (2 * (t * p).sum(axis=1) + 1.0) / (t.sum(axis=1) + p.sum(axis=1) + 1.0)
    return bce + (1.0 - dice)


class HardMiner:
    """Scores candidate patches with a model and re-weights a PatchIndex toward the hardest ones.

    images: list of (H, W, C) float32 [0, 1]; masks: list of (H, W) uint8 {0, 1} or int32 instance labels (the
    arrays the index was built on; > 0 is foreground). Each call scores `max_patches` candidates (a seeded random
    subset per epoch; None = all) without augmentation, on the foreground channel (channel 0) of the prediction.
    """

    def __init__(self, index: PatchIndex, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 max_patches: int | None = 256, mix: float = 0.5, power: float = 1.0, seed: int = 0,
                 loss_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] = per_patch_bce_dice):
        if len(images) != len(index.shapes) or len(masks) != len(index.shapes):
            raise ValueError("images/masks must be the arrays the PatchIndex was built on")
        self.index, self.images, self.masks = index, images, masks
        self.max_patches, self.mix, self.power, self.seed = max_patches, mix, power, int(seed)
        self.loss_fn = loss_fn

    def select(self, epoch: int) -> np.ndarray:
        """Candidate indices to score after `epoch` (sorted)."""
        n = len(self.index)
        if self.max_patches is None or self.max_patches >= n:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, int(epoch), 7])
        return np.sort(rng.choice(n, size=int(self.max_patches), replace=False))

    def patches(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> images (n, P, P, C) float32 and masks (n, P, P, 1) float32 at the candidates' grid origins."""
        p = self.index.patch
        xs, ys = [], []
        for i in indices:
            k, y, x = int(self.index.image[i]), int(self.index.y[i]), int(self.index.x[i])
            xs.append(self.images[k][y:y + p, x:x + p])
            ys.append(self.masks[k][y:y + p, x:x + p, None] > 0)
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)

    def mine(self, predict: Callable[[np.ndarray], np.ndarray], epoch: int = 0, batch_size: int = 16) -> np.ndarray:
        """Score the selected candidates with `predict` ((n, P, P, C) -> (n, P, P, K) probabilities; channel 0, the
        foreground, is scored), re-weight the index, and return the per-patch losses in selection order."""
        indices = self.select(epoch)
        losses = []
        for s in range(0, len(indices), batch_size):
            x, y = self.patches(indices[s:s + batch_size])
            pred = np.asarray(predict(x), dtype=np.float32)[..., :1]
            losses.append(np.asarray(self.loss_fn(y, pred), dtype=np.float64).reshape(-1))
        losses = np.concatenate(losses) if losses else np.zeros(0)
        self.index.set_losses(indices, losses, self.mix, self.power)
        return losses


def hard_mining_callback(miner: HardMiner, batch_size: int = 16, every: int = 1):
    """A keras.callbacks.Callback that runs `miner` with the training model at the end of every `every`-th epoch,
    so the next epoch's patches lean toward the hardest ones; logs `hard_mining_loss` (mean score). Not saved with
    the model (no serialisation needed). Resumable like `callbacks._Resumable`: `get_state()` -> JSON-safe dict of
    the scored losses, `set_resume_state(state)` re-applies them."""
    import keras

    class HardMiningCallback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.miner, self.batch_size, self.every = miner, int(batch_size), max(1, int(every))

        def get_state(self) -> dict:
            loss = self.miner.index.loss
            scored = np.flatnonzero(np.isfinite(loss))
            return {"indices": scored.tolist(), "losses": loss[scored].tolist()}

        def set_resume_state(self, state: dict | None) -> None:
            if state and state.get("indices"):
                self.miner.index.set_losses(state["indices"], state["losses"], self.miner.mix, self.miner.power)

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % self.every:
                return

            def predict(x):
                out = self.model(x, training=False)  # eager call: fixed patch size, no retracing trap
                return keras.ops.convert_to_numpy(out)

            losses = self.miner.mine(predict, epoch, self.batch_size)
            if logs is not None and losses.size:
                logs["hard_mining_loss"] = float(losses.mean())

    return HardMiningCallback()
