"""Augmentation policies: named albumentations recipes in a registry.

A policy is a factory `(patch_size, channels) -> A.Compose` called as `pipeline(image=..., mask=...)`.
image: (H, W, C) float32 in [0, 1]; mask: (H, W) uint8 {0, 1}. Geometric transforms warp both identically and use
nearest-neighbour interpolation for the mask, so masks stay binary.
"""
from __future__ import annotations

from typing import Callable

import albumentations as A
import cv2
import numpy as np

PolicyFactory = Callable[[int, int], A.Compose]
_POLICIES: dict[str, PolicyFactory] = {}


def register_policy(name: str):
    """Decorator adding a policy factory to the registry under `name`."""
    def deco(fn: PolicyFactory) -> PolicyFactory:
        _POLICIES[name] = fn
        return fn
    return deco


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def get_policy(name: str, patch_size: int, channels: int = 1, seed: int | None = None) -> A.Compose:
    """Build the named policy; `seed` makes its random draws reproducible."""
    if name not in _POLICIES:
        raise KeyError(f"unknown augmentation policy {name!r}; available: {', '.join(available_policies())}")
    pipeline = _POLICIES[name](patch_size, channels)
    if seed is not None:
        pipeline.set_random_seed(seed)
    return pipeline


@register_policy("none")
def _none(patch_size: int, channels: int) -> A.Compose:
    return A.Compose([])


@register_policy("flips")
def _flips(patch_size: int, channels: int) -> A.Compose:
    """Dihedral group only: flips and 90° rotations (cheap, label-exact)."""
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)])


@register_policy("unet_classic")
def _unet_classic(patch_size: int, channels: int) -> A.Compose:
    """Seed 001: smooth elastic deformation, random 90°/180°/270° rotations, horizontal/vertical flips."""
    return A.Compose([
        A.ElasticTransform(alpha=patch_size * 0.25, sigma=patch_size * 0.05, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.RandomRotate90(p=1.0),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
    ])


@register_policy("default")
def _default(patch_size: int, channels: int) -> A.Compose:
    """Our default: dihedral transforms, mild elastic warp and mild photometric jitter (contrast/gamma/noise)."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.ElasticTransform(alpha=patch_size * 0.25, sigma=patch_size * 0.05, interpolation=cv2.INTER_LINEAR,
                           mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_REFLECT_101, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.15, p=0.5),
        A.RandomGamma(gamma_limit=(80, 125), p=0.3),
    ])


def apply_policy(pipeline: A.Compose, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a pipeline on one pair; returns (image float32 clipped to [0, 1], mask uint8 {0, 1})."""
    out = pipeline(image=image, mask=mask)
    img = np.clip(out["image"], 0.0, 1.0).astype(np.float32, copy=False)
    if img.ndim == 2:
        img = img[..., None]
    return img, (out["mask"] > 0).astype(np.uint8)
