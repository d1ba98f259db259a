"""ImageNet encoders: ONE table mapping a backbone name to its keras.applications constructor, its input
preprocessing, its skip layers and its stride, plus `encoder_features` that wires one into a model.

Skip layers are listed shallow -> deep (nominal strides 2, 4, 8, 16 for stride-32 backbones; 1, 2, 4, 8 for VGG16
truncated at block5_conv3), followed by the bridge (deepest) layer. An int names a layer by position in
`base.layers` (InceptionV3's stem layers have auto-generated names that change within a session).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

import keras

from .freezing import set_encoder_trainable
from .layers import ChannelRepeat, ImageNetPreprocess

LayerRef = Union[str, int]


@dataclass(frozen=True)
class Backbone:
    constructor: str                 # attribute of keras.applications
    preprocess: str                  # ImageNetPreprocess mode
    skips: tuple[LayerRef, ...]      # shallow -> deep
    bridge: LayerRef                 # deepest feature map fed to the decoder
    stride: int                      # input H, W must be multiples of this
    min_size: int = 32               # smallest H, W keras.applications accepts
    exact_halving: bool = True       # False: 'valid' padding, feature sizes are not H / 2**k (decoder resizes)
    file_preprocess: str | None = None  # preprocessing when weights come from a file, if it differs (EfficientNet)


BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone("VGG16", "caffe",
                      ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"), "block5_conv3", 16),
    "densenet121": Backbone("DenseNet121", "torch",
                            ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu"), "relu", 32),
    "resnet50": Backbone("ResNet50", "caffe",
                         ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
                         "conv5_block3_out", 32),
    "mobilenetv2": Backbone("MobileNetV2", "tf",
                            ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                             "block_13_expand_relu"), "out_relu", 32),
    "efficientnetb0": Backbone("EfficientNetB0", "raw255",
                               ("block2a_expand_activation", "block3a_expand_activation",
                                "block4a_expand_activation", "block6a_expand_activation"), "top_activation", 32,
                               file_preprocess="raw255_std_fix"),
    # InceptionV3 pads 'valid': at 256 px its maps are 125 (layer 9), 60 (layer 16), 29 (mixed2), 14 (mixed7),
    # 6 (mixed10) instead of 128/64/32/16/8; the decoder resizes each upsampled map to its skip (ResizeLike).
    "inceptionv3": Backbone("InceptionV3", "tf", (9, 16, "mixed2", "mixed7"), "mixed10", 32,
                            min_size=96, exact_halving=False),
}


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    return BACKBONES[name]


def _check_weights(weights) -> None:
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"encoder_weights must be 'imagenet', None or a weights-file path, got {weights!r}")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: encoder weights file not found (expected a keras.applications "
                                f"'*_notop' .h5 / .weights.h5 file, or use encoder_weights='imagenet' or None)")


def build_backbone(name: str, input_shape: tuple = (None, None, 3), weights=None) -> keras.Model:
    """The full keras.applications model (include_top=False) for `name`: (B, H, W, 3) preprocessed -> features.

    weights: "imagenet" (downloads once to ~/.keras), None (random init) or a path to saved weights
    (e.g. `build_backbone(name).save_weights("enc.weights.h5")`, or the official `*_notop.h5` file for offline use).
    """
    spec = get_backbone(name)
    _check_weights(weights)
    weights = os.fspath(weights) if weights is not None else None
    ctor = getattr(keras.applications, spec.constructor)
    return ctor(include_top=False, weights=weights, input_shape=tuple(input_shape))


def _layer(base: keras.Model, ref: LayerRef):
    return base.layers[ref] if isinstance(ref, int) else base.get_layer(ref)


def build_encoder(name: str, input_shape: tuple = (None, None, 3), weights=None,
                  skips: Sequence[LayerRef] | None = None,
                  bridge: LayerRef | None = None, trainable: int | str = 0) -> keras.Model:
    """Multi-output encoder `{name}_encoder`: preprocessed (B, H, W, 3) -> [skip_1, ..., skip_n, bridge].

    `trainable` (0 = frozen, the default | k deepest blocks | "all") is applied by
    `freezing.set_encoder_trainable`; the blocks end at the skip layers (skip 1 | ... | skip n | bridge).
    """
    spec = get_backbone(name)
    base = build_backbone(name, input_shape, weights)
    refs = list(spec.skips if skips is None else skips) + [spec.bridge if bridge is None else bridge]
    outs = [_layer(base, r) for r in refs]
    encoder = keras.Model(base.inputs, [layer.output for layer in outs], name=f"{name}_encoder")
    set_encoder_trainable(encoder, trainable)
    return encoder


def encoder_features(inputs, name: str, weights=None, **encoder_options) -> list:
    """Apply backbone `name` to model inputs (B, H, W, 1|3) in [0, 1]: grey is repeated to RGB and the backbone's
    own preprocessing runs inside the model. Returns [skip_1, ..., skip_n, bridge] tensors (shallow -> deep).
    `encoder_options`: skips, bridge, trainable (see `build_encoder`)."""
    spec = get_backbone(name)
    h, w, c = inputs.shape[1:]
    if c not in (1, 3):
        raise ValueError(f"{name} encoder takes 1 (grey, repeated to RGB) or 3 channels, got {c}")
    for dim in (h, w):
        if dim is not None and dim < spec.min_size:
            raise ValueError(f"{name} encoder needs inputs of at least {spec.min_size}×{spec.min_size} px, "
                             f"got {h}×{w}")
    x = ChannelRepeat(3, name="grey_to_rgb")(inputs) if c == 1 else inputs
    from_file = weights is not None and weights != "imagenet"
    mode = spec.file_preprocess if from_file and spec.file_preprocess else spec.preprocess
    x = ImageNetPreprocess(mode, name=f"{name}_preprocess")(x)
    encoder = build_encoder(name, (h, w, 3), weights, **encoder_options)
    feats = encoder(x)
    return list(feats)


__all__ = ["Backbone", "BACKBONES", "available_backbones", "get_backbone", "build_backbone", "build_encoder",
           "encoder_features"]
