"""tf.data input pipelines: load + normalise once, sample (augmented) patches, batch, prefetch.

Training yields an endless stream of random patches (image (P, P, C) float32 [0, 1], mask (P, P, 1) float32 {0, 1});
validation yields the fixed grid of patches covering each validation image, so val metrics are comparable across
epochs. Augmentation runs in numpy (albumentations) through `tf.numpy_function` with a parallel map; each element's
randomness comes only from (seed, element index), so seeded runs reproduce exactly whatever the thread schedule.
One exception: with hard-example mining, the first batches of an epoch may have been prefetched before the epoch-end
callback re-weighted the draws, and how many depends on timing (the mined weights apply from then on).

Optional (off by default): rare-foreground oversampling (`foreground_weights`) and hard-example mining
(`PatchSampler.hard_miner` + `sampling.hard_mining_callback`); both draw patch origins from a `sampling.PatchIndex`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .augment import apply_policy, get_policy
from .io import ImageReadError, read_image, read_mask
from .manifest import Sample
from .preprocessing import pad_to_multiple, percentile_normalize
from .sampling import HardMiner, PatchIndex, SMALL_ROI_FRACTION
from .tiling import extract_tiles, tile_origins


@dataclass
class Pair:
    """One normalised training pair: image (H, W, C) float32 [0, 1], mask (H, W) uint8 {0, 1}."""

    image: np.ndarray
    mask: np.ndarray
    name: str


def load_pair(sample: Sample, channels: int = 1, low: float = 2.0, high: float = 98.0,
              mask_threshold: float = 0, check_outlines: bool = True) -> Pair:
    """Read, check and normalise one manifest row (mask: pixel > `mask_threshold` is foreground; outline-only masks
    are rejected with a hint unless check_outlines=False)."""
    if sample.mask is None:
        raise ImageReadError(f"{sample.image}: manifest row {sample.row} has no mask; it cannot be used for training")
    raw = read_image(sample.image, channels)
    msk = read_mask(sample.mask, threshold=mask_threshold, check_outlines=check_outlines)
    if raw.shape[:2] != msk.shape:
        raise ImageReadError(f"{sample.mask}: mask is {msk.shape[0]}×{msk.shape[1]} but image {sample.image} is "
                             f"{raw.shape[0]}×{raw.shape[1]}")
    try:
        img = percentile_normalize(raw, low, high)
    except ValueError as exc:
        raise ImageReadError(f"{sample.image}: {exc}") from exc
    return Pair(img, msk, sample.stem)


def load_pairs(samples: list[Sample], channels: int = 1, low: float = 2.0, high: float = 98.0,
               mask_threshold: float = 0, check_outlines: bool = True) -> list[Pair]:
    """Load + normalise every row once; the arrays are then cached in memory for the whole run."""
    return [load_pair(s, channels, low, high, mask_threshold, check_outlines) for s in samples]


def _pad_for_patch(pair: Pair, patch: int) -> Pair:
    """Images smaller than a patch are reflect-padded (never rejected)."""
    h, w = pair.mask.shape
    if h >= patch and w >= patch:
        return pair
    return Pair(pad_to_multiple(pair.image, 1, "reflect", min_size=patch),
                pad_to_multiple(pair.mask, 1, "reflect", min_size=patch), pair.name)


class PatchSampler:
    """Draws the `index`-th random training patch deterministically from (seed, index).

    Default: an image chosen in proportion to its area, a uniformly random position. With `foreground_weights`
    (e.g. {"background": 1, "small": 4, "large": 2}) or once `hard_miner()` was called, positions come from a
    `PatchIndex` of candidates on a `candidate_stride` grid (default patch // 4), weighted by foreground class
    (small ROI < `small_fraction` of the patch) and by hardness.
    """

    def __init__(self, pairs: list[Pair], patch_size: int, policy: str = "default", seed: int = 0,
                 foreground_weights=None, candidate_stride: int | None = None,
                 small_fraction: float = SMALL_ROI_FRACTION):
        if not pairs:
            raise ValueError("no training images")
        self.pairs = [_pad_for_patch(p, patch_size) for p in pairs]
        self.patch = patch_size
        self.policy = policy
        self.seed = int(seed)
        self.channels = self.pairs[0].image.shape[-1]
        for p in self.pairs:
            if p.image.shape[-1] != self.channels:
                raise ValueError(f"{p.name}: image has {p.image.shape[-1]} channels, others have {self.channels}")
        areas = np.array([p.mask.size for p in self.pairs], np.float64)
        self.image_weights = areas / areas.sum()
        self._local = threading.local()
        self._stride, self._small = candidate_stride, small_fraction
        self.index: PatchIndex | None = None
        if foreground_weights is not None:
            self.index = self._build_index(foreground_weights)

    def _build_index(self, foreground_weights=None) -> PatchIndex:
        return PatchIndex([p.mask for p in self.pairs], self.patch, self._stride, foreground_weights, self._small)

    def hard_miner(self, max_patches: int | None = 256, mix: float = 0.5, power: float = 1.0, **kwargs) -> HardMiner:
        """A HardMiner over this sampler's candidates (builds an unweighted index if there is none yet); pass it to
        `sampling.hard_mining_callback` so that each epoch's losses re-weight the next epoch's draws."""
        if self.index is None:
            self.index = self._build_index()
        return HardMiner(self.index, [p.image for p in self.pairs], [p.mask for p in self.pairs],
                         max_patches=max_patches, mix=mix, power=power, seed=self.seed, **kwargs)

    def _pipeline(self):
        if not hasattr(self._local, "pipeline"):
            self._local.pipeline = get_policy(self.policy, self.patch, self.channels)
        return self._local.pipeline

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (image (P, P, C) float32, mask (P, P, 1) float32)."""
        rng = np.random.default_rng([self.seed, int(index)])
        if self.index is None:
            pair = self.pairs[rng.choice(len(self.pairs), p=self.image_weights)]
            h, w = pair.mask.shape
            y = int(rng.integers(0, h - self.patch + 1))
            x = int(rng.integers(0, w - self.patch + 1))
        else:
            k, y, x = self.index.draw(rng)
            pair = self.pairs[k]
        img = pair.image[y:y + self.patch, x:x + self.patch]
        msk = pair.mask[y:y + self.patch, x:x + self.patch]
        pipeline = self._pipeline()
        pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        img, msk = apply_policy(pipeline, img, msk)
        return img, msk[..., None].astype(np.float32)


def train_dataset(pairs: list[Pair], patch_size: int, batch_size: int, policy: str = "default", seed: int = 0,
                  start: int = 0, foreground_weights=None, sampler: PatchSampler | None = None):
    """Endless tf.data.Dataset of augmented (image, mask) batches; `start` skips the first sample indices (resume).

    foreground_weights: optional rare-foreground oversampling (see PatchSampler). sampler: a prebuilt PatchSampler
    to draw from instead (needed for hard mining, whose callback re-weights that sampler); then `pairs`, `policy`,
    `seed` and `foreground_weights` are taken from it.
    """
    import tensorflow as tf

    if sampler is None:
        sampler = PatchSampler(pairs, patch_size, policy, seed, foreground_weights=foreground_weights)
    elif sampler.patch != patch_size:
        raise ValueError(f"sampler draws {sampler.patch}-px patches but patch_size={patch_size}")
    c = sampler.channels

    def _draw(i):
        img, msk = tf.numpy_function(sampler.sample, [i], [tf.float32, tf.float32], stateful=False)
        img.set_shape((patch_size, patch_size, c))
        msk.set_shape((patch_size, patch_size, 1))
        return img, msk

    ds = tf.data.Dataset.counter(start=start).map(_draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def grid_arrays(pairs: list[Pair], patch_size: int, overlap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All grid patches of the pairs: (N, P, P, C) float32 images and (N, P, P, 1) float32 masks."""
    images, masks = [], []
    for p in pairs:
        p = _pad_for_patch(p, patch_size)
        origins = tile_origins(p.mask.shape, patch_size, overlap)
        images.append(extract_tiles(p.image, origins, patch_size))
        masks.append(extract_tiles(p.mask[..., None], origins, patch_size).astype(np.float32))
    return np.concatenate(images), np.concatenate(masks)


def val_dataset(pairs: list[Pair], patch_size: int, batch_size: int):
    """Finite tf.data.Dataset over the fixed patch grid of the validation images (cached in memory)."""
    import tensorflow as tf

    images, masks = grid_arrays(pairs, patch_size)
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
