"""`densenet121_deconv_unet`: a frozen DenseNet121 encoder with a transposed-convolution ("deconvolution") decoder
(Das et al. 2025, §3.4.2, their "Model-1"; registered alias `model1_densenet`).

Encoder skips conv1_relu, pool2_relu, pool3_relu, pool4_relu; bridge relu. Decoder block, deep -> shallow:
Conv2DTranspose ×2 -> BN -> ReLU -> Dropout (0.25 deepest ... 0.5 shallowest) -> concat skip -> 3×3 conv-BN-ReLU;
then a 3×3 refinement conv, a final Conv2DTranspose to full size and a 1×1 sigmoid head; L2 1e-4 on every decoder
convolution. Stride 32. (B, H, W, 1|3) in [0, 1] -> (B, H, W, 1) float32 probabilities. The paper resized with
Lambda layers; here the registered ResizeLike layer aligns maps, only where shapes differ.
"""
from __future__ import annotations

import keras
from keras import layers

from .backbones import encoder_features
from .blocks import align_to, conv_bn_relu, image_input, linear_rates, normalization, sigmoid_head, upsample
from .registry import PRETRAINED_ENCODER_LR, register_alias, register_model

NAME = "densenet121_deconv_unet"


@register_model(NAME, stride=lambda **_: 32, learning_rate=PRETRAINED_ENCODER_LR)
def build_densenet121_deconv_unet(input_shape: tuple = (None, None, 3), encoder_weights=None,
                                  encoder_trainable: int | str = 0, decoder_filters: tuple = (512, 256, 128, 64),
                                  dropout=(0.25, 0.5), l2: float = 1e-4, refine_filters: int = 64,
                                  final_filters: int = 32, name: str = NAME, out_channels: int | None = None,
                                  target: str | None = None) -> keras.Model:
    """`dropout`: (deepest, shallowest) rates of the decoder blocks; `l2`: weight decay of the decoder convolutions;
    `encoder_trainable`: 0 (frozen) | k deepest blocks | "all" (see `freezing`).
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    reg = keras.regularizers.L2(l2) if l2 else None
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, "densenet121", encoder_weights, trainable=encoder_trainable)
    if len(decoder_filters) != len(skips):
        raise ValueError(f"decoder_filters needs {len(skips)} entries, got {len(decoder_filters)}")
    for i, (filters, skip, rate) in enumerate(zip(decoder_filters, reversed(skips),
                                                  linear_rates(dropout, len(skips)))):
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
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target), name=name)


register_alias("model1_densenet", NAME)
