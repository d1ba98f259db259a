"""Attention U-Net (Oktay et al. 2018; Chen et al. 2025, §2.2, Fig. 1): the `unet` encoder/decoder with an additive
attention gate on every skip, gated by the coarser decoder features; optional weight-standardised convolutions
(WSConv2D, Chen et al. 2025 Fig. 1; scaled WS, float16-safe). Stride 2**depth. Attention maps are layers
`att{level}_psi` (B, H_l, W_l, 1) in [0, 1].
"""
from __future__ import annotations

import keras
from keras import layers

from .blocks import attention_gate, double_conv, image_input, sigmoid_head, upsample
from .layers import WSConv2D
from .registry import register_model


def _stride(depth: int = 4, **_) -> int:
    return 2 ** depth


@register_model("attention_unet", stride=_stride)
def build_attention_unet(input_shape: tuple = (None, None, 1), base_filters: int = 16, depth: int = 4,
                         dropout: float = 0.0, upsampling: str = "bilinear", weight_standardization: bool = False,
                         name: str = "attention_unet", out_channels: int | None = None,
                         target: str | None = None) -> keras.Model:
    """(B, H, W, C) -> (B, H, W, K) float32. Filters double per level up to base·2**depth.
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    conv_cls = WSConv2D if weight_standardization else layers.Conv2D
    inputs = image_input(input_shape)
    x, skips = inputs, []
    for level in range(depth):
        x = double_conv(x, base_filters * 2 ** level, f"enc{level}", dropout, conv_cls=conv_cls)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = double_conv(x, base_filters * 2 ** depth, "bottleneck", dropout, conv_cls=conv_cls)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        gated, _ = attention_gate(skips[level], x, max(filters // 2, 1), f"att{level}", gating_stride=2)
        x = upsample(x, filters, f"up{level}", upsampling)
        x = layers.Concatenate(name=f"skip{level}")([x, gated])
        x = double_conv(x, filters, f"dec{level}", dropout, conv_cls=conv_cls)
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target), name=name)
