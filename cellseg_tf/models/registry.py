"""The model registry: name -> (builder, stride function). Adding a model is adding one entry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# Default Adam rates (TrainConfig.learning_rate = None picks the model's): a network trained from scratch takes
# 1e-3; decoders on pretrained ImageNet encoders take seed 002's 1e-4, which leaves the pretrained features intact
# when the encoder is unfrozen for fine-tuning.
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
