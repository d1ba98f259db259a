"""U-Nets on frozen ImageNet encoders, one per backbone: `{backbone}_unet` (the six backbones of Das et al. 2025).

Encoder: a keras.applications backbone from `backbones.BACKBONES` (frozen by default; `encoder_trainable=k` trains
the deepest k blocks, "all" the whole encoder: see `freezing`). Decoder: per level ×2 upsampling, concat with the
backbone's skip, (conv, BN, ReLU) ×2; stride-32 backbones have no full-resolution skip, so their last decoder
block upsamples without one.
Input (B, H, W, 1|3) in [0, 1] -> (B, H, W, 1) float32 probabilities; H, W multiples of the backbone stride.
"""
from __future__ import annotations

from functools import partial

import keras

from .backbones import BACKBONES, encoder_features, get_backbone
from .blocks import align_to, double_conv, image_input, sigmoid_head, upsample
from .registry import PRETRAINED_ENCODER_LR, register_model

DEFAULT_DECODER_FILTERS = (256, 128, 64, 32, 16)


def build_encoder_unet(backbone: str, input_shape: tuple = (None, None, 1), encoder_weights=None,
                       encoder_trainable: int | str = 0, decoder_filters: tuple = DEFAULT_DECODER_FILTERS,
                       upsampling: str = "bilinear", dropout: float = 0.0, name: str | None = None,
                       out_channels: int | None = None, target: str | None = None) -> keras.Model:
    """(B, H, W, C) -> (B, H, W, K) float32. `decoder_filters` deep -> shallow, one per ×2 upsampling step.
    `out_channels` / `target`: the output head (1 channel binary, or 2 for an instance target; `heads.head_kind`)."""
    spec = get_backbone(backbone)
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, backbone, encoder_weights, trainable=encoder_trainable)
    n_up = spec.stride.bit_length() - 1                      # log2(stride) upsampling steps
    if len(decoder_filters) < n_up:
        raise ValueError(f"decoder_filters needs {n_up} entries for {backbone} (stride {spec.stride}), "
                         f"got {len(decoder_filters)}")
    targets = list(reversed(skips)) + [None] * (n_up - len(skips))   # deep -> shallow; None = no skip
    for i, (filters, skip) in enumerate(zip(decoder_filters, targets)):
        x = upsample(x, filters, f"dec{i}_up", upsampling)
        if skip is not None:
            x = align_to(x, skip, f"dec{i}_align")
            x = keras.layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = double_conv(x, filters, f"dec{i}", dropout)
    x = align_to(x, inputs, "out_align")
    return keras.Model(inputs, sigmoid_head(x, out_channels=out_channels, target=target),
                       name=name or f"{backbone}_unet")


def _register(backbone: str) -> None:
    stride = BACKBONES[backbone].stride
    builder = partial(build_encoder_unet, backbone)
    builder.__doc__ = f"{backbone} encoder U-Net. " + (build_encoder_unet.__doc__ or "")
    register_model(f"{backbone}_unet", stride=lambda **_: stride, learning_rate=PRETRAINED_ENCODER_LR)(builder)


for _name in BACKBONES:
    _register(_name)
