"""Classic U-Net (Ronneberger et al. 2015, as rebuilt by Henrion et al. 2025): DoubleConv encoder/decoder,
bilinear upsampling, concat skips.

`base_filters` 16 is our CPU-friendly default (64 = paper). Depth d halves the resolution d times: stride 2**d.
"""
from __future__ import annotations

import keras
from keras import layers

from .blocks import double_conv, image_input, sigmoid_head
from .registry import register_model


def _stride(depth: int = 4, **_) -> int:
    return 2 ** depth


@register_model("unet", stride=_stride)
def build_unet(input_shape: tuple = (None, None, 1), base_filters: int = 16, depth: int = 4, dropout: float = 0.0,
               upsampling: str = "bilinear", name: str = "unet", out_channels: int | None = None,
               target: str | None = None) -> keras.Model:
    """(B, H, W, C) -> (B, H, W, K) float32 probabilities. Filters double per level up to base·2**depth.
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    if upsampling not in ("bilinear", "nearest", "transpose"):
        raise ValueError(f"upsampling must be bilinear, nearest or transpose, got {upsampling!r}")
    inputs = image_input(input_shape)
    x, skips = inputs, []
    for level in range(depth):
        x = double_conv(x, base_filters * 2 ** level, f"enc{level}", dropout)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = double_conv(x, base_filters * 2 ** depth, "bottleneck", dropout)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        else:
            x = layers.UpSampling2D(2, interpolation=upsampling, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = double_conv(x, filters, f"dec{level}", dropout)
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target), name=name)
