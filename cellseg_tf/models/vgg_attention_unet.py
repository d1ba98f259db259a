"""Attention U-Nets on a frozen VGG16 encoder (Das et al. 2025, §3.4.3-3.4.4, their "Model-2" and "Model-3").

- `vgg16_attention_unet` (alias `model2_vgg_attention`): VGG16 truncated at block5_conv3 (skips block1_conv2 ...
  block4_conv3). Decoder block: bilinear ×2 -> attention gate on the skip (gated by the upsampled decoder map,
  their eq. 1) -> concat -> (3×3 conv, BN, ReLU) ×2 with dropout 0.1. Stride 16.
- `vgg16_attention_ia_unet` (alias `model3_vgg_attention_ia`): VGG16 pooling outputs block1_pool ... block5_pool.
  Decoder block: Conv2DTranspose ×2 -> attention gate -> concat -> (3×3 conv, norm, ReLU) ×2 -> Instance Activation
  (IA) module (1×1 conv, norm, ReLU, residual add) -> SpatialDropout (0.4 deepest ... 0.2 shallowest);
  `normalization="batch"|"instance"`. Stride 32.
Both take (B, H, W, 1|3) in [0, 1] and return (B, H, W, 1) float32 probabilities; attention maps are the layers
`att{i}_psi`. `encoder_trainable`: 0 (frozen, default) | k deepest blocks | "all" (see `freezing`).
"""
from __future__ import annotations

import keras
from keras import layers

from .backbones import encoder_features
from .blocks import (NORMALIZATIONS, attention_gate, double_conv, image_input, instance_activation, linear_rates,
                     sigmoid_head, upsample)
from .registry import PRETRAINED_ENCODER_LR, register_alias, register_model


@register_model("vgg16_attention_unet", stride=lambda **_: 16, learning_rate=PRETRAINED_ENCODER_LR)
def build_vgg16_attention_unet(input_shape: tuple = (None, None, 3), encoder_weights=None,
                               encoder_trainable: int | str = 0, decoder_filters: tuple = (256, 128, 64, 32),
                               dropout: float = 0.1, upsampling: str = "bilinear",
                               name: str = "vgg16_attention_unet", out_channels: int | None = None,
                               target: str | None = None) -> keras.Model:
    """Attention gates use decoder_filters[i] // 2 intermediate channels.
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "vgg16", encoder_weights, trainable=encoder_trainable)
    if len(decoder_filters) != len(skips):
        raise ValueError(f"decoder_filters needs {len(skips)} entries, got {len(decoder_filters)}")
    for i, (filters, skip) in enumerate(zip(decoder_filters, reversed(skips))):
        x = upsample(x, filters, f"dec{i}_up", upsampling)
        gated, _ = attention_gate(skip, x, max(filters // 2, 1), f"att{i}")
        x = layers.Concatenate(name=f"dec{i}_concat")([x, gated])
        x = double_conv(x, filters, f"dec{i}", dropout)
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target), name=name)


@register_model("vgg16_attention_ia_unet", stride=lambda **_: 32, learning_rate=PRETRAINED_ENCODER_LR)
def build_vgg16_attention_ia_unet(input_shape: tuple = (None, None, 3), encoder_weights=None,
                                  encoder_trainable: int | str = 0, decoder_filters: tuple = (512, 256, 128, 64, 32),
                                  spatial_dropout=(0.4, 0.2), normalization: str = "batch",
                                  name: str = "vgg16_attention_ia_unet", out_channels: int | None = None,
                                  target: str | None = None) -> keras.Model:
    """`spatial_dropout`: (deepest, shallowest) rates; `normalization`: "batch" | "instance".
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    pools = ("block1_pool", "block2_pool", "block3_pool", "block4_pool")
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "vgg16", encoder_weights, skips=pools, bridge="block5_pool",
                                 trainable=encoder_trainable)
    n_up = len(skips) + 1
    if len(decoder_filters) != n_up:
        raise ValueError(f"decoder_filters needs {n_up} entries, got {len(decoder_filters)}")
    targets = list(reversed(skips)) + [None]
    for i, (filters, skip, rate) in enumerate(zip(decoder_filters, targets, linear_rates(spatial_dropout, n_up))):
        x = upsample(x, filters, f"dec{i}_up", "transpose", kernel_size=3)
        if skip is not None:
            gated, _ = attention_gate(skip, x, max(filters // 2, 1), f"att{i}")
            x = layers.Concatenate(name=f"dec{i}_concat")([x, gated])
        x = double_conv(x, filters, f"dec{i}", norm=normalization)
        x = instance_activation(x, f"dec{i}_ia", norm=normalization)
        x = layers.SpatialDropout2D(rate, name=f"dec{i}_sdrop")(x)
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target), name=name)


register_alias("model2_vgg_attention", "vgg16_attention_unet")
register_alias("model3_vgg_attention_ia", "vgg16_attention_ia_unet")
