"""Seed 002 (Das et al., §3.4.2-3.4.4) Model-1/2/3: frozen ImageNet encoders with custom decoders.

- `model1_densenet`: DenseNet121 encoder (skips conv1_relu, pool2_relu, pool3_relu, pool4_relu; bridge relu),
  decoder blocks Conv2DTranspose -> BN -> ReLU -> Dropout (0.25 deep ... 0.5 shallow) -> concat skip ->
  3×3 conv-BN-ReLU, a 3×3 refinement conv, a final Conv2DTranspose to full size, 1×1 sigmoid; L2 1e-4 on all
  decoder convolutions. Stride 32.
- `model2_vgg_attention`: VGG16 truncated at block5_conv3 (skips block1_conv2 ... block4_conv3), decoder blocks
  bilinear ×2 -> attention gate on the skip (gated by the upsampled decoder map, eq. 1) -> concat -> (3×3 conv,
  BN, ReLU) ×2 with dropout 0.1. Stride 16.
- `model3_vgg_attention_ia`: VGG16 pooling outputs block1_pool ... block5_pool, decoder blocks Conv2DTranspose ->
  attention gate -> concat -> (3×3 conv, norm, ReLU) ×2 -> Instance Activation module (1×1 conv, norm, ReLU,
  residual add) -> SpatialDropout (0.4 deep ... 0.2 shallow); `normalization="batch"|"instance"`. Stride 32.
All take (B, H, W, 1|3) in [0, 1] and return (B, H, W, 1) float32 probabilities; attention maps are layers
`att{i}_psi`. The paper used Lambda layers for resizing; here alignment is the registered ResizeLike layer,
inserted only where shapes differ.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .backbones import encoder_features
from .blocks import (NORMALIZATIONS, align_to, attention_gate, conv_bn_relu, double_conv, image_input,
                     instance_activation, normalization, sigmoid_head, upsample)
from .registry import PRETRAINED_ENCODER_LR, register_model


def _rates(bounds, n: int) -> list[float]:
    """n dropout rates linearly from bounds[0] to bounds[1] (a single float gives n equal rates)."""
    lo, hi = (bounds, bounds) if np.isscalar(bounds) else bounds
    return [float(r) for r in np.linspace(lo, hi, n)]


def _encoder_options(encoder_freeze: bool, unfreeze_blocks: int, train_encoder_bn: bool) -> dict:
    return dict(freeze=encoder_freeze, unfreeze_blocks=unfreeze_blocks, train_bn=train_encoder_bn)


@register_model("model1_densenet", stride=lambda **_: 32, learning_rate=PRETRAINED_ENCODER_LR)
def build_model1_densenet(input_shape: tuple = (None, None, 3), encoder_weights=None, encoder_freeze: bool = True,
                          unfreeze_blocks: int = 0, train_encoder_bn: bool = False,
                          decoder_filters: tuple = (512, 256, 128, 64), dropout=(0.25, 0.5), l2: float = 1e-4,
                          refine_filters: int = 64, final_filters: int = 32,
                          name: str = "model1_densenet") -> keras.Model:
    """Seed 002 Model-1. `dropout`: (deepest, shallowest) rates of the decoder blocks; `l2`: weight decay."""
    reg = keras.regularizers.L2(l2) if l2 else None
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "densenet121", encoder_weights,
                                 **_encoder_options(encoder_freeze, unfreeze_blocks, train_encoder_bn))
    if len(decoder_filters) != len(skips):
        raise ValueError(f"decoder_filters needs {len(skips)} entries, got {len(decoder_filters)}")
    for i, (filters, skip, rate) in enumerate(zip(decoder_filters, reversed(skips),
                                                  _rates(dropout, len(skips)))):
        x = upsample(x, filters, f"dec{i}_up", "transpose", kernel_size=3, kernel_regularizer=reg)
        x = layers.Activation("relu", name=f"dec{i}_up_relu")(normalization(f"dec{i}_up_bn")(x))
        x = layers.Dropout(rate, name=f"dec{i}_drop")(x)
        x = align_to(x, skip, f"dec{i}_align")
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = conv_bn_relu(x, filters, f"dec{i}_fuse", kernel_regularizer=reg)
    x = conv_bn_relu(x, refine_filters, "refine", kernel_regularizer=reg)
    x = upsample(x, final_filters, "final_up", "transpose", kernel_size=3, kernel_regularizer=reg)
    x = layers.Activation("relu", name="final_up_relu")(normalization("final_up_bn")(x))
    x = align_to(x, inputs, "out_align")
    return keras.Model(inputs, sigmoid_head(x), name=name)


@register_model("model2_vgg_attention", stride=lambda **_: 16, learning_rate=PRETRAINED_ENCODER_LR)
def build_model2_vgg_attention(input_shape: tuple = (None, None, 3), encoder_weights=None,
                               encoder_freeze: bool = True, unfreeze_blocks: int = 0,
                               train_encoder_bn: bool = False, decoder_filters: tuple = (256, 128, 64, 32),
                               dropout: float = 0.1, upsampling: str = "bilinear",
                               name: str = "model2_vgg_attention") -> keras.Model:
    """Seed 002 Model-2. Attention gates use decoder_filters[i] // 2 intermediate channels."""
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "vgg16", encoder_weights,
                                 **_encoder_options(encoder_freeze, unfreeze_blocks, train_encoder_bn))
    if len(decoder_filters) != len(skips):
        raise ValueError(f"decoder_filters needs {len(skips)} entries, got {len(decoder_filters)}")
    for i, (filters, skip) in enumerate(zip(decoder_filters, reversed(skips))):
        x = upsample(x, filters, f"dec{i}_up", upsampling)
        gated, _ = attention_gate(skip, x, max(filters // 2, 1), f"att{i}")
        x = layers.Concatenate(name=f"dec{i}_concat")([x, gated])
        x = double_conv(x, filters, f"dec{i}", dropout)
    return keras.Model(inputs, sigmoid_head(x), name=name)


@register_model("model3_vgg_attention_ia", stride=lambda **_: 32, learning_rate=PRETRAINED_ENCODER_LR)
def build_model3_vgg_attention_ia(input_shape: tuple = (None, None, 3), encoder_weights=None,
                                  encoder_freeze: bool = True, unfreeze_blocks: int = 0,
                                  train_encoder_bn: bool = False, decoder_filters: tuple = (512, 256, 128, 64, 32),
                                  spatial_dropout=(0.4, 0.2), normalization: str = "batch",
                                  name: str = "model3_vgg_attention_ia") -> keras.Model:
    """Seed 002 Model-3. `spatial_dropout`: (deepest, shallowest) rates; `normalization`: "batch" | "instance"."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    pools = ("block1_pool", "block2_pool", "block3_pool", "block4_pool")
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "vgg16", encoder_weights, skips=pools, bridge="block5_pool",
                                 **_encoder_options(encoder_freeze, unfreeze_blocks, train_encoder_bn))
    n_up = len(skips) + 1
    if len(decoder_filters) != n_up:
        raise ValueError(f"decoder_filters needs {n_up} entries, got {len(decoder_filters)}")
    targets = list(reversed(skips)) + [None]
    for i, (filters, skip, rate) in enumerate(zip(decoder_filters, targets, _rates(spatial_dropout, n_up))):
        x = upsample(x, filters, f"dec{i}_up", "transpose", kernel_size=3)
        if skip is not None:
            gated, _ = attention_gate(skip, x, max(filters // 2, 1), f"att{i}")
            x = layers.Concatenate(name=f"dec{i}_concat")([x, gated])
        x = double_conv(x, filters, f"dec{i}", norm=normalization)
        x = instance_activation(x, f"dec{i}_ia", norm=normalization)
        x = layers.SpatialDropout2D(rate, name=f"dec{i}_sdrop")(x)
    return keras.Model(inputs, sigmoid_head(x), name=name)
