"""U-Nets on frozen ImageNet encoders (seed 002 §3.4.1: six backbones, `{backbone}_unet`).

Encoder: a keras.applications backbone from `backbones.BACKBONES` (frozen by default; `unfreeze_blocks=k` fine-tunes
the deepest k blocks). Decoder: per level ×2 upsampling, concat with the backbone's skip, (conv, BN, ReLU) ×2;
stride-32 backbones have no full-resolution skip, so their last decoder block upsamples without one.
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
                       encoder_freeze: bool = True, unfreeze_blocks: int = 0, train_encoder_bn: bool = False,
                       decoder_filters: tuple = DEFAULT_DECODER_FILTERS, upsampling: str = "bilinear",
                       dropout: float = 0.0, name: str | None = None) -> keras.Model:
    """(B, H, W, C) -> (B, H, W, 1) float32. `decoder_filters` deep -> shallow, one per ×2 upsampling step."""
    spec = get_backbone(backbone)
    inputs = image_input(input_shape)
    *skips, x = encoder_features(inputs, backbone, encoder_weights, freeze=encoder_freeze,
                                 unfreeze_blocks=unfreeze_blocks, train_bn=train_encoder_bn)
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
    return keras.Model(inputs, sigmoid_head(x), name=name or f"{backbone}_unet")


def _register(backbone: str) -> None:
    stride = BACKBONES[backbone].stride
    builder = partial(build_encoder_unet, backbone)
    builder.__doc__ = f"{backbone} encoder U-Net. " + (build_encoder_unet.__doc__ or "")
    register_model(f"{backbone}_unet", stride=lambda **_: stride, learning_rate=PRETRAINED_ENCODER_LR)(builder)


for _name in BACKBONES:
    _register(_name)
