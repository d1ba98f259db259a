"""tf.data input pipelines: load + normalise once, sample (augmented) patches, batch, prefetch.

Training yields an endless stream of random patches (image (P, P, C) float32 [0, 1], target (P, P, K) float32);
validation yields the fixed grid of patches covering each validation image, so val metrics are comparable across
epochs. The target is the binary mask (K = 1, "binary") or, for instance-label masks, a target derived from the
augmented label patch (`targets.derive_target`: "contour" / "distance", K = 2, channel 0 = foreground);
`load_training_pairs` decides which ("auto") and says why when it cannot follow an explicit request.
Augmentation runs in numpy (albumentations) through `tf.numpy_function`, one call per batch, batches drawn by a
parallel map; each element's randomness comes only from (seed, element index), so seeded runs reproduce exactly
whatever the thread schedule.
One exception: with hard-example mining, the first batches of an epoch may have been prefetched before the epoch-end
callback re-weighted the draws, and how many depends on timing (the mined weights apply from then on).

Optional (off by default): rare-foreground oversampling (`foreground_weights`) and hard-example mining
(`PatchSampler.hard_miner` + `sampling.hard_mining_callback`); both draw patch origins from a `sampling.PatchIndex`.
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import apply_policy, get_policy
from .io import ImageReadError, LabelValueError, read_image, read_mask
from .manifest import Sample
from .preprocessing import NORM_HIGH, NORM_LOW, pad_to_multiple, percentile_normalize
from .sampling import HardMiner, PatchIndex, SMALL_ROI_FRACTION
from .targets import check_target, derive_target, resolve_target, split_shared_ids, target_channels
from .tiling import extract_tiles, tile_origins


@dataclass
class Pair:
    """One normalised training pair: image (H, W, C) float32 [0, 1], mask (H, W) uint8 {0, 1} (binary target) or
    int32 instance labels (0 = background; instance targets)."""

    image: np.ndarray
    mask: np.ndarray
    name: str


def load_pair(sample: Sample, channels: int = 1, low: float = NORM_LOW, high: float = NORM_HIGH,
              mask_threshold: float = 0, check_outlines: bool = True, labels: bool = False) -> Pair:
    """Read, check and normalise one manifest row (mask: pixel > `mask_threshold` is foreground; outline-only masks
    are rejected with a hint unless check_outlines=False). labels=True keeps the mask's instance ids (int32; a
    mask that is not an integer label image raises `io.LabelValueError`)."""
    if sample.mask is None:
        raise ImageReadError(f"{sample.image}: manifest row {sample.row} has no mask; it cannot be used for training")
    raw = read_image(sample.image, channels)
    msk = read_mask(sample.mask, threshold=mask_threshold, instances=labels, check_outlines=check_outlines)
    if raw.shape[:2] != msk.shape:
        raise ImageReadError(f"{sample.mask}: mask is {msk.shape[0]}×{msk.shape[1]} but image {sample.image} is "
                             f"{raw.shape[0]}×{raw.shape[1]}")
    try:
        img = percentile_normalize(raw, low, high)
    except ValueError as exc:
        raise ImageReadError(f"{sample.image}: {exc}") from exc
    return Pair(img, msk, sample.stem)


def load_pairs(samples: list[Sample], channels: int = 1, low: float = NORM_LOW, high: float = NORM_HIGH,
               mask_threshold: float = 0, check_outlines: bool = True) -> list[Pair]:
    """Load + normalise every row once; the arrays are then cached in memory for the whole run."""
    return [load_pair(s, channels, low, high, mask_threshold, check_outlines) for s in samples]


def load_training_pairs(train: list[Sample], val: list[Sample], target: str = "auto", channels: int = 1,
                        low: float = NORM_LOW, high: float = NORM_HIGH,
                        mask_threshold: float = 0) -> tuple[list[Pair], list[Pair], str]:
    """Load train and val rows for `target` ("auto" | "binary" | "contour" | "distance") -> (train, val, target).

    "binary" reads masks as foreground exactly like `load_pairs`. Otherwise masks are read as instance labels and
    `targets.resolve_target` decides on the TRAINING masks: "auto" becomes "distance" when some mask carries more
    than 2 ids, else "binary". Masks are binary also when `mask_threshold` > 0 or a mask is not an integer label
    image. An explicit instance target that cannot be honoured warns once, says why, and trains "binary".
    With an instance target, an id shared by disconnected parts is split into one id per part (one warning naming
    the files: `targets.split_shared_ids`). Empty masks are allowed (their patches train as all background; one
    warning names them).
    """
    check_target(target, allow_auto=True)
    explicit = target not in ("auto", "binary")
    kind, why, pairs = "binary", "", None
    if target != "binary":
        if mask_threshold > 0:
            why = (f"mask_threshold={mask_threshold:g} reads every mask as binary foreground; set it to 0 for "
                   "instance-label masks")
        else:
            try:
                pairs = [load_pair(s, channels, low, high, mask_threshold, labels=True) for s in train]
            except LabelValueError as exc:
                why = f"{exc}"
            else:
                kind, why = resolve_target(target, [p.mask for p in pairs])
    if kind == "binary":
        if explicit and why:
            warnings.warn(f"{why}; training the binary target instead", UserWarning, stacklevel=2)
        train_pairs = ([Pair(p.image, (p.mask > 0).astype(np.uint8), p.name) for p in pairs] if pairs is not None
                       else load_pairs(train, channels, low, high, mask_threshold))
        val_pairs = load_pairs(val, channels, low, high, mask_threshold)
    else:
        val_pairs = [load_pair(s, channels, low, high, mask_threshold, labels=True) for s in val]
        both = _split_shared(pairs + val_pairs, train + val)    # one warning for train and val masks
        train_pairs, val_pairs = both[:len(train)], both[len(train):]
    empty = [Path(s.mask).name for s, p in zip(train + val, train_pairs + val_pairs) if not p.mask.any()]
    if empty:
        warnings.warn(f"{len(empty)} mask(s) are empty (no foreground): {_names(empty)}; their patches train and "
                      "validate as all background", UserWarning, stacklevel=2)
    return train_pairs, val_pairs, kind


def _names(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _split_shared(pairs: list[Pair], samples: list[Sample]) -> list[Pair]:
    """Instance labels with every disconnected part of an id given its own id; one warning naming the files."""
    out, notes = [], []
    for pair, sample in zip(pairs, samples):
        labels, report = split_shared_ids(pair.mask)
        if report["extra_parts"]:
            notes.append(f"{Path(sample.mask).name} ({len(report['ids'])} id(s), {report['extra_parts']} extra "
                         f"part(s), largest {report['largest_extra_px']} px)")
        out.append(Pair(pair.image, labels, pair.name))
    if notes:
        warnings.warn(f"{len(notes)} mask(s) use one id for disconnected objects: {_names(notes)}; each part is "
                      "treated as its own cell (an id must be one connected object, 8-connectivity)",
                      UserWarning, stacklevel=3)
    return out


def _pad_for_patch(pair: Pair, patch: int) -> Pair:
    """Images smaller than a patch are reflect-padded (never rejected)."""
    h, w = pair.mask.shape
    if h >= patch and w >= patch:
        return pair
    return Pair(pad_to_multiple(pair.image, 1, "reflect", min_size=patch),
                pad_to_multiple(pair.mask, 1, "reflect", min_size=patch), pair.name)


class PatchSampler:
    """Draws the `index`-th random training patch deterministically from (seed, index).

    target "binary": pairs hold binary masks and a draw is (image, mask (P, P, 1)). Instance targets: pairs hold
    label images, the label patch is augmented with the image (nearest neighbour) and the target is derived from
    the AUGMENTED labels: (image, target (P, P, K)), K = `targets.target_channels(target)`.

    Default: an image chosen in proportion to its area, a uniformly random position. With `foreground_weights`
    (e.g. {"background": 1, "small": 4, "large": 2}) or once `hard_miner()` was called, positions come from a
    `PatchIndex` of candidates on a `candidate_stride` grid (default patch // 4), weighted by foreground class
    (small ROI < `small_fraction` of the patch) and by hardness.
    """

    def __init__(self, pairs: list[Pair], patch_size: int, policy: str = "default", seed: int = 0,
                 foreground_weights=None, candidate_stride: int | None = None,
                 small_fraction: float = SMALL_ROI_FRACTION, target: str = "binary"):
        if not pairs:
            raise ValueError("no training images")
        self.target = check_target(target)
        self.target_channels = target_channels(target)
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

    def augmented(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The `index`-th patch after augmentation, before any target is derived: (image (P, P, C) float32,
        mask (P, P) uint8 {0, 1} for the binary target, or int32 instance labels for an instance target)."""
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
        return apply_policy(pipeline, img, msk, labels=self.target != "binary")

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (image (P, P, C) float32, target (P, P, K) float32; K = 1 for the binary mask): `augmented(index)`
        with the target derived from the augmented patch."""
        img, msk = self.augmented(index)
        if self.target == "binary":
            return img, msk[..., None].astype(np.float32)
        return img, derive_target(msk, self.target)

    def sample_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """`sample(i)` for each index, stacked: (B, P, P, C) float32 images, (B, P, P, K) float32 targets."""
        draws = [self.sample(int(i)) for i in np.asarray(indices).ravel()]
        return np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])


def train_dataset(pairs: list[Pair], patch_size: int, batch_size: int, policy: str = "default", seed: int = 0,
                  start: int = 0, foreground_weights=None, sampler: PatchSampler | None = None):
    """Endless tf.data.Dataset of augmented (image, target) batches; `start` skips the first sample indices (resume).

    foreground_weights: optional rare-foreground oversampling (see PatchSampler). sampler: a prebuilt PatchSampler
    to draw from instead (needed for hard mining, whose callback re-weights that sampler); then `pairs`, `policy`,
    `seed`, `foreground_weights` and the target kind are taken from it. Without one, the pairs' masks are binary
    (target "binary").

    Batch b holds sample indices start + b·B ... start + b·B + B − 1, drawn by one `tf.numpy_function` call per
    batch (`PatchSampler.sample_batch`; batches are drawn in parallel): one Python call per batch instead of one per
    patch halves the pipeline's CPU time per patch (docs/TRAINING.md, "Speed"); the stream is the same as drawing
    patch by patch.
    """
    import tensorflow as tf

    if sampler is None:
        sampler = PatchSampler(pairs, patch_size, policy, seed, foreground_weights=foreground_weights)
    elif sampler.patch != patch_size:
        raise ValueError(f"sampler draws {sampler.patch}-px patches but patch_size={patch_size}")
    c, k = sampler.channels, sampler.target_channels

    def _draw(indices):
        img, msk = tf.numpy_function(sampler.sample_batch, [indices], [tf.float32, tf.float32], stateful=False)
        img.set_shape((batch_size, patch_size, patch_size, c))
        msk.set_shape((batch_size, patch_size, patch_size, k))
        return img, msk

    ds = tf.data.Dataset.counter(start=start).batch(batch_size, drop_remainder=True)
    return ds.map(_draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def grid_arrays(pairs: list[Pair], patch_size: int, overlap: int = 0,
                target: str = "binary") -> tuple[np.ndarray, np.ndarray]:
    """All grid patches of the pairs: (N, P, P, C) float32 images and (N, P, P, K) float32 targets (binary masks,
    or for an instance target the target derived from each label tile)."""
    check_target(target)
    images, masks = [], []
    for p in pairs:
        p = _pad_for_patch(p, patch_size)
        origins = tile_origins(p.mask.shape, patch_size, overlap)
        images.append(extract_tiles(p.image, origins, patch_size))
        tiles = extract_tiles(p.mask[..., None], origins, patch_size)
        if target == "binary":
            masks.append((tiles > 0).astype(np.float32))
        else:
            masks.append(np.stack([derive_target(t[..., 0], target) for t in tiles]))
    return np.concatenate(images), np.concatenate(masks)


def val_dataset(pairs: list[Pair], patch_size: int, batch_size: int, target: str = "binary"):
    """Finite tf.data.Dataset over the fixed patch grid of the validation images (cached in memory)."""
    import tensorflow as tf

    images, masks = grid_arrays(pairs, patch_size, target=target)
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
