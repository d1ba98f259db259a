"""Model zoo behind one registry: `build_model(name, input_shape=(H, W, C), **options)`.

Every builder returns a functional keras.Model mapping (B, H, W, C) float [0, 1] images to (B, H, W, K) float32
sigmoid probabilities (float32 even under mixed_float16). H and W must be divisible by the model's stride
(`model_stride(name, **options)`), or be None for fully convolutional use. Every model ends in a `TargetHead`:
K = 1 (binary foreground) by default; options `out_channels=2` / `target="contour"|"distance"` build an instance
target head (channel 0 stays the foreground). `target_kind(model)` says which a model (or a loaded .keras) predicts.
"""
from __future__ import annotations

from typing import Callable

from . import layers as _layers  # noqa: F401  (registers custom Keras layers for safe-mode loading)
from .heads import TargetHead, target_kind
from . import unet as _unet  # noqa: F401  (each module registers its builders)
from . import attention_unet as _attention_unet  # noqa: F401
from . import encoder_unet as _encoder_unet  # noqa: F401
from . import densenet_deconv_unet as _densenet_deconv_unet  # noqa: F401
from . import vgg_attention_unet as _vgg_attention_unet  # noqa: F401
from . import msd as _msd  # noqa: F401
from .backbones import BACKBONES, available_backbones, build_backbone
from .freezing import legacy_encoder_options, set_encoder_trainable
from .registry import MODEL_ALIASES, MODEL_REGISTRY, ModelSpec, register_model


def available_models(include_aliases: bool = False) -> list[str]:
    """Registered model names, sorted; `include_aliases` adds the earlier names that still build (CLI choices)."""
    return sorted(MODEL_REGISTRY) + (sorted(MODEL_ALIASES) if include_aliases else [])


def canonical_name(name: str) -> str:
    """`name`, or the model an alias (an earlier name, e.g. `model1_densenet`) stands for."""
    return MODEL_ALIASES.get(name, name)


def model_stride(name: str, **options) -> int:
    return _spec(name).stride(**options)


def default_learning_rate(name: str) -> float:
    """The Adam rate model `name` trains with by default: 1e-3 from scratch, 1e-4 on a pretrained encoder."""
    return _spec(name).learning_rate


def _spec(name: str) -> ModelSpec:
    if canonical_name(name) not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return MODEL_REGISTRY[canonical_name(name)]


def build_model(name: str, input_shape: tuple = (None, None, 1), **options):
    """Build the registered model `name` (or an alias) for (H, W, C) inputs; raises ValueError if H or W breaks the
    stride. Earlier encoder options (encoder_freeze, unfreeze_blocks, train_encoder_bn) are mapped onto
    `encoder_trainable` with a FutureWarning."""
    spec = _spec(name)
    options = legacy_encoder_options(options, where=f"model {name!r}")
    stride = spec.stride(**options)
    for dim, label in zip(input_shape[:2], ("height", "width")):
        if dim is not None and dim % stride:
            raise ValueError(f"model {name!r}: input {label} {dim} is not divisible by its stride {stride}; "
                             f"use a multiple of {stride} (tiles/patches are padded to one)")
    return spec.build(input_shape=tuple(input_shape), **options)


__all__ = ["build_model", "available_models", "canonical_name", "model_stride", "default_learning_rate",
           "register_model", "MODEL_REGISTRY", "MODEL_ALIASES", "BACKBONES", "available_backbones", "build_backbone",
           "set_encoder_trainable", "TargetHead", "target_kind"]
