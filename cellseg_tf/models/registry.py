"""The model registry: name -> (builder, stride function, default learning rate). Adding a model is adding one entry.

Aliases keep earlier names working (saved configs and scripts): `MODEL_ALIASES` maps an old name to its model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# Default Adam rates (TrainConfig.learning_rate = None picks the model's): a network trained from scratch takes
# 1e-3; decoders on pretrained ImageNet encoders take Das et al. 2025's 1e-4, which leaves the pretrained features
# intact when the encoder is unfrozen for fine-tuning.
FROM_SCRATCH_LR = 1e-3
PRETRAINED_ENCODER_LR = 1e-4


@dataclass(frozen=True)
class ModelSpec:
    build: Callable
    stride: Callable[..., int]
    learning_rate: float = FROM_SCRATCH_LR


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, stride: Callable[..., int], learning_rate: float = FROM_SCRATCH_LR):
    """Decorator registering `builder(input_shape, **options) -> keras.Model` with its stride(**options) and the
    default learning rate to train it with."""
    def deco(builder: Callable) -> Callable:
        MODEL_REGISTRY[name] = ModelSpec(builder, stride, float(learning_rate))
        return builder
    return deco


MODEL_ALIASES: dict[str, str] = {}


def register_alias(alias: str, name: str) -> None:
    """Let `alias` (an earlier name) build the registered model `name`; `available_models()` lists only `name`."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"alias {alias!r}: no registered model {name!r}")
    MODEL_ALIASES[alias] = name
