"""Augmentation policies: named albumentations recipes in a registry.

A policy is a factory `(patch_size, channels) -> A.Compose` called as `pipeline(image=..., mask=...)`.
image: (H, W, C) float32 in [0, 1]; mask: (H, W) uint8 {0, 1} or int32 instance labels. Geometric transforms warp
both identically and use nearest-neighbour interpolation for the mask, so masks stay binary and label ids stay
exact (never blended into a new id); photometric transforms touch the image only.
Every policy keeps the input size (crop-type transforms resize back; 90° rotations/transposition swap H and W of a
non-square input), so the same policy serves random training patches and whole-image offline expansion
(`cellseg_tf.expand`). `patch_size` only scales magnitudes (elastic
displacement, shift in px).

Policies: `none`, `flips`, `default` (training default: dihedral + mild elastic + mild photometric),
`default_scale_blur` (default + zoom, defocus blur, noise: a bench_real candidate, not picked), `unet_classic`
(Henrion et al. 2025), `brightfield_2stage` (Das et al. 2025 §3.3.2). Add one with `@register_policy("name")`.
"""
from __future__ import annotations

from typing import Callable

import albumentations as A
import cv2
import numpy as np

PolicyFactory = Callable[[int, int], A.Compose]
_POLICIES: dict[str, PolicyFactory] = {}

NEAREST = cv2.INTER_NEAREST


def register_policy(name: str):
    """Decorator adding a policy factory to the registry under `name`."""
    def deco(fn: PolicyFactory) -> PolicyFactory:
        _POLICIES[name] = fn
        return fn
    return deco


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def get_policy(name: str, patch_size: int, channels: int = 1, seed: int | None = None) -> A.Compose:
    """Build the named policy for (patch_size, patch_size, channels) inputs; `seed` makes its draws reproducible."""
    if name not in _POLICIES:
        raise KeyError(f"unknown augmentation policy {name!r}; available: {', '.join(available_policies())}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    pipeline = _POLICIES[name](int(patch_size), int(channels))
    if seed is not None:
        pipeline.set_random_seed(seed)
    return pipeline


class CoarseElastic(A.DualTransform):
    """Elastic deformation of the original U-Net (Henrion et al. 2025): random displacements on a coarse
    `grid`×`grid` control grid (normal, std `displacement` px), upsampled bicubically and Gaussian-smoothed (sigma = `smooth` × image size),
    then one remap for image (linear) and mask (nearest). Smooth by construction: no tears or folds.
    """

    def __init__(self, grid: int = 3, displacement: float = 10.0, smooth: float = 0.1,
                 interpolation: int = cv2.INTER_LINEAR, mask_interpolation: int = NEAREST,
                 border_mode: int = cv2.BORDER_REFLECT_101, p: float = 0.5):
        super().__init__(p=p)
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        self.grid, self.displacement, self.smooth = int(grid), float(displacement), float(smooth)
        self.interpolation, self.mask_interpolation, self.border_mode = interpolation, mask_interpolation, border_mode

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        coarse = self.random_generator.normal(0.0, self.displacement, size=(2, self.grid, self.grid)).astype(np.float32)
        fields = []
        for d in coarse:
            f = cv2.resize(d, (w, h), interpolation=cv2.INTER_CUBIC)
            if self.smooth > 0:
                f = cv2.GaussianBlur(f, (0, 0), sigmaX=self.smooth * min(h, w), borderType=cv2.BORDER_REFLECT_101)
            fields.append(f)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        return {"map_x": xs + fields[0], "map_y": ys + fields[1]}

    def _remap(self, arr: np.ndarray, map_x, map_y, interpolation: int) -> np.ndarray:
        out = cv2.remap(arr, map_x, map_y, interpolation, borderMode=self.border_mode)
        return out[..., None] if arr.ndim == 3 and out.ndim == 2 else out

    def apply(self, img: np.ndarray, map_x=None, map_y=None, **params) -> np.ndarray:
        return self._remap(img, map_x, map_y, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, map_x=None, map_y=None, **params) -> np.ndarray:
        return self._remap(mask, map_x, map_y, self.mask_interpolation)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("grid", "displacement", "smooth", "interpolation", "mask_interpolation", "border_mode")


@register_policy("none")
def _none(patch_size: int, channels: int) -> A.Compose:
    """No augmentation (ablations, or data that is already expanded offline)."""
    return A.Compose([])


@register_policy("flips")
def _flips(patch_size: int, channels: int) -> A.Compose:
    """Dihedral group only: flips and 90° rotations (cheap, label-exact)."""
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)])


@register_policy("unet_classic")
def _unet_classic(patch_size: int, channels: int) -> A.Compose:
    """Henrion et al. 2025: coarse 3×3-grid elastic deformation with Gaussian smoothing, random 90°/180°/270°
    rotations and horizontal/vertical flips, the same draw for image and mask."""
    return A.Compose([
        CoarseElastic(grid=3, displacement=max(2.0, patch_size * 0.04), smooth=0.08, p=0.8),
        A.RandomRotate90(p=1.0),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
    ])


@register_policy("default")
def _default(patch_size: int, channels: int) -> A.Compose:
    """Our default: dihedral transforms, mild elastic warp and mild photometric jitter (brightness/contrast/gamma)."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.ElasticTransform(alpha=patch_size * 0.25, sigma=max(1.0, patch_size * 0.05), interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_REFLECT_101, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.15, p=0.5),
        A.RandomGamma(gamma_limit=(80, 125), p=0.3),
    ])


@register_policy("default_scale_blur")
def _default_scale_blur(patch_size: int, channels: int) -> A.Compose:
    """`default` plus the optics a new microscope brings: zoom (objects 0.75–1.33× their size), defocus blur and
    sensor noise, each on a share of the patches. The mask follows the zoom (nearest); blur and noise leave it
    alone, so the network learns that a blurred edge is still where the annotation puts it."""
    return A.Compose(_default(patch_size, channels).transforms + [
        A.Affine(scale=(0.75, 1.33), keep_ratio=True, interpolation=cv2.INTER_LINEAR, mask_interpolation=NEAREST,
                 border_mode=cv2.BORDER_REFLECT_101, p=0.4),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.5, 1.5), blur_limit=0, p=1.0),
                 A.Defocus(radius=(1, 2), alias_blur=(0.1, 0.2), p=1.0)], p=0.25),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
    ])


def photometric_stage(channels: int) -> list[A.BasicTransform]:
    """Das et al. 2025's primary (image-only) transforms, each with p=1: optics, sensor noise, contrast; colour for
    RGB."""
    ts: list[A.BasicTransform] = [
        A.MotionBlur(blur_limit=(3, 7), p=1.0),
        A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.3), p=1.0),
        A.GaussNoise(std_range=(0.02, 0.08), p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
        A.RandomGamma(gamma_limit=(70, 150), p=1.0),
        A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=1.0),
        A.InvertImg(p=1.0),
    ]
    if channels == 3:  # colour-only transforms (ISO noise models colour sensor noise and needs 3 bands)
        ts += [A.ISONoise(color_shift=(0.01, 0.05), intensity=(0.1, 0.4), p=1.0),
               A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=25, val_shift_limit=15, p=1.0),
               A.ChannelShuffle(p=1.0),
               A.ToGray(num_output_channels=3, p=1.0)]
    return ts


def geometric_stage(patch_size: int) -> list[A.BasicTransform]:
    """Das et al. 2025's secondary (image + mask) transforms, each with p=1, nearest interpolation for masks,
    size-keeping."""
    shift = max(1, patch_size // 8)
    return [
        A.ElasticTransform(alpha=patch_size * 0.3, sigma=max(1.0, patch_size * 0.06), interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=NEAREST, border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.GridDistortion(num_steps=5, distort_limit=0.25, interpolation=cv2.INTER_LINEAR, mask_interpolation=NEAREST,
                         border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.06, 0.06), rotate=(-30, 30), shear=(-10, 10),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=NEAREST, border_mode=cv2.BORDER_REFLECT_101,
                 p=1.0),
        # random-resized-crop that keeps the size: crop 0-25 % off each side, resize back. cv2.resize's plain
        # INTER_NEAREST is offset by half a pixel against INTER_LINEAR; NEAREST_EXACT keeps image and mask aligned.
        A.CropAndPad(percent=(-0.25, 0.0), keep_size=True, sample_independently=True,
                     interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT, p=1.0),
        # pad-then-crop: zero-pad by up to `shift` px and crop back at a random offset (an integer shift)
        A.Affine(translate_px=(-shift, shift), interpolation=NEAREST, mask_interpolation=NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0),
        A.HorizontalFlip(p=1.0),
        A.VerticalFlip(p=1.0),
        A.RandomRotate90(p=1.0),
        A.Transpose(p=1.0),
    ]


@register_policy("brightfield_2stage")
def _brightfield_2stage(patch_size: int, channels: int) -> A.Compose:
    """Das et al. 2025 §3.3.2: one primary photometric transform (or none, 20 %), then one secondary geometric
    transform."""
    return A.Compose([
        A.OneOf(photometric_stage(channels), p=0.8),
        A.OneOf(geometric_stage(patch_size), p=1.0),
    ])


def apply_policy(pipeline: A.Compose, image: np.ndarray, mask: np.ndarray,
                 labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run a pipeline on one pair; returns (image (H, W, C) float32 clipped to [0, 1], mask (H, W) uint8 {0, 1}).

    labels=True: `mask` is an instance-label image (H, W) int; it is warped like a binary mask (nearest neighbour,
    so every output pixel holds an id of the input and ids > 255 survive) and returned as int32 labels, from which
    `targets.derive_target` then derives the training target. The ids travel as float32 (exact below 2^24; larger
    ids are renumbered for the warp and mapped back): OpenCV then picks the same nearest neighbours as for a uint8
    mask (int32 masks take another path that can differ by a pixel), so with the same seed
    `warp(labels) > 0` equals `warp(labels > 0)` exactly.
    """
    ids = None
    if labels:
        lab = np.asarray(mask)
        if lab.size and int(lab.max()) >= 2 ** 24:
            ids, lab = np.unique(lab, return_inverse=True)
            lab = lab.reshape(np.shape(mask))
        mask = lab.astype(np.float32)
    out = pipeline(image=image, mask=mask)
    img = np.clip(out["image"], 0.0, 1.0).astype(np.float32, copy=False)
    if img.ndim == 2:
        img = img[..., None]
    msk = out["mask"]
    if msk.ndim == 3:
        msk = msk[..., 0]
    if img.shape[:2] != msk.shape[:2]:
        raise RuntimeError(f"augmentation changed image {img.shape[:2]} and mask {msk.shape[:2]} differently")
    if labels:
        lab = np.rint(msk).astype(np.int64)
        return img, (lab if ids is None else ids[lab]).astype(np.int32)
    return img, (msk > 0).astype(np.uint8)
