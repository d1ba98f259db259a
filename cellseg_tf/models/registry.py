"""The model registry: name -> (builder, stride function). Adding a model is adding one entry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ModelSpec:
    build: Callable
    stride: Callable[..., int]


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, stride: Callable[..., int]):
    """Decorator registering `builder(input_shape, **options) -> keras.Model` with its stride(**options)."""
    def deco(builder: Callable) -> Callable:
        MODEL_REGISTRY[name] = ModelSpec(builder, stride)
        return builder
    return deco
