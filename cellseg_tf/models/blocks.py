"""Shared functional building blocks (plain Keras layers only, so saved models load in safe mode)."""
from __future__ import annotations

import keras
from keras import layers


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3):
    """3×3 conv (no bias) -> BatchNorm -> ReLU."""
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)  # fast-settling stats: few steps per run
    return layers.Activation("relu", name=f"{name}_relu")(x)


def double_conv(x, filters: int, name: str, dropout: float = 0.0):
    """Seed 001 DoubleConv: (conv, BN, ReLU) ×2 with optional dropout between them."""
    x = conv_bn_relu(x, filters, f"{name}_a")
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return conv_bn_relu(x, filters, f"{name}_b")


def sigmoid_head(x, name: str = "head"):
    """1×1 conv to one logit, sigmoid in float32 (safe under mixed_float16)."""
    x = layers.Conv2D(1, 1, name=f"{name}_logits")(x)
    return layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)


def image_input(input_shape: tuple, name: str = "image"):
    return keras.Input(shape=input_shape, name=name)
