"""Model zoo behind one registry: `build_model(name, input_shape=(H, W, C), **options)`.

Every builder returns a functional keras.Model mapping (B, H, W, C) float [0, 1] images to (B, H, W, 1) float32
sigmoid probabilities (float32 even under mixed_float16). H and W must be divisible by the model's stride
(`model_stride(name, **options)`), or be None for fully convolutional use.
"""
from __future__ import annotations

from typing import Callable

from . import layers as _layers  # noqa: F401  (registers custom Keras layers for safe-mode loading)
from . import unet as _unet  # noqa: F401  (each module registers its builders)
from . import attention_unet as _attention_unet  # noqa: F401
from . import encoder_unet as _encoder_unet  # noqa: F401
from . import seed002 as _seed002  # noqa: F401
from .backbones import BACKBONES, available_backbones, build_backbone
from .registry import MODEL_REGISTRY, ModelSpec, register_model


def available_models() -> list[str]:
    return sorted(MODEL_REGISTRY)


def model_stride(name: str, **options) -> int:
    return _spec(name).stride(**options)


def default_learning_rate(name: str) -> float:
    """The Adam rate model `name` trains with by default: 1e-3 from scratch, 1e-4 on a pretrained encoder."""
    return _spec(name).learning_rate


def _spec(name: str) -> ModelSpec:
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return MODEL_REGISTRY[name]


def build_model(name: str, input_shape: tuple = (None, None, 1), **options):
    """Build the registered model `name` for (H, W, C) inputs; raises ValueError if H or W breaks the stride."""
    spec = _spec(name)
    stride = spec.stride(**options)
    for dim, label in zip(input_shape[:2], ("height", "width")):
        if dim is not None and dim % stride:
            raise ValueError(f"model {name!r}: input {label} {dim} is not divisible by its stride {stride}; "
                             f"use a multiple of {stride} (tiles/patches are padded to one)")
    return spec.build(input_shape=tuple(input_shape), **options)


__all__ = ["build_model", "available_models", "model_stride", "default_learning_rate", "register_model", "MODEL_REGISTRY", "BACKBONES",
           "available_backbones", "build_backbone"]
