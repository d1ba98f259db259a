"""Shared functional building blocks (built-in Keras layers, plus the registered ones in `layers.py`).

All blocks take and return (B, H, W, C) tensors; `name` prefixes every layer so layers can be found by name
(e.g. `model.get_layer("att0_psi")` is an attention map).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .fused_batchnorm import FusedBatchNormalization
from .heads import target_head
from .layers import ResizeLike

NORMALIZATIONS = ("batch", "instance")


def normalization(name: str, norm: str = "batch"):
    """BatchNorm (momentum 0.9: fast-settling statistics for short runs; `FusedBatchNormalization`, the same layer
    computed by TF's fused kernel) or instance norm (GroupNorm, groups = C)."""
    if norm == "batch":
        return FusedBatchNormalization(momentum=0.9, name=name)
    if norm == "instance":
        return layers.GroupNormalization(groups=-1, name=name)
    raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3, conv_cls=layers.Conv2D, norm: str = "batch",
                 kernel_regularizer=None):
    """kxk conv (no bias) -> BatchNorm (or instance norm) -> ReLU. `conv_cls` may be WSConv2D."""
    x = conv_cls(filters, kernel_size, padding="same", use_bias=False, kernel_initializer="he_normal",
                 kernel_regularizer=kernel_regularizer, name=f"{name}_conv")(x)
    x = normalization(f"{name}_bn", norm)(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def double_conv(x, filters: int, name: str, dropout: float = 0.0, conv_cls=layers.Conv2D, norm: str = "batch",
                kernel_regularizer=None):
    """DoubleConv of the U-Net (Ronneberger et al. 2015; dropout after each conv as in Henrion et al. 2025):
    (conv, BN, ReLU, dropout) ×2; dropout layers only when `dropout` > 0."""
    kw = dict(conv_cls=conv_cls, norm=norm, kernel_regularizer=kernel_regularizer)
    for part in ("a", "b"):
        x = conv_bn_relu(x, filters, f"{name}_{part}", **kw)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"{name}_{part}_drop")(x)
    return x


def attention_gate(x, g, inter_filters: int, name: str, gating_stride: int = 1, kernel_regularizer=None):
    """Additive attention gate (Oktay et al. 2018; Das et al. 2025, eq. 1): returns x · ψ and ψ.

    x: (B, H, W, Cx) skip features; g: (B, H/s, W/s, Cg) gating (decoder) features, s = `gating_stride` (1 when g
    was already upsampled to the skip's size, 2 for the original coarse gating). ψ = σ(ψ-conv(ReLU(θx + φg))) is
    (B, H, W, 1) in [0, 1] (layer `{name}_psi`, upsampled bilinearly when s > 1); the gated skip is x · ψ.
    """
    theta = layers.Conv2D(inter_filters, gating_stride, strides=gating_stride, padding="same", use_bias=False,
                          kernel_regularizer=kernel_regularizer, name=f"{name}_theta_x")(x)
    phi = layers.Conv2D(inter_filters, 1, kernel_regularizer=kernel_regularizer, name=f"{name}_phi_g")(g)
    f = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    psi = layers.Conv2D(1, 1, kernel_regularizer=kernel_regularizer, name=f"{name}_psi_conv")(f)
    psi = layers.Activation("sigmoid", name=f"{name}_psi" if gating_stride == 1 else f"{name}_psi_coarse")(psi)
    if gating_stride > 1:
        psi = layers.UpSampling2D(gating_stride, interpolation="bilinear", name=f"{name}_psi")(psi)
    return layers.Multiply(name=f"{name}_gated")([x, psi]), psi


def instance_activation(x, name: str, norm: str = "batch", kernel_regularizer=None):
    """'Instance Activation' (IA) module of Das et al. 2025: x + ReLU(norm(conv1×1(x))), same shape as x."""
    y = conv_bn_relu(x, x.shape[-1], name, kernel_size=1, norm=norm, kernel_regularizer=kernel_regularizer)
    return layers.Add(name=f"{name}_residual")([x, y])


def linear_rates(bounds, n: int) -> list[float]:
    """n dropout rates linearly from bounds[0] (deepest block) to bounds[1] (shallowest); a float gives n equal ones."""
    lo, hi = (bounds, bounds) if np.isscalar(bounds) else bounds
    return [float(r) for r in np.linspace(lo, hi, n)]


def align_to(x, ref, name: str):
    """Bilinearly resize x to ref's spatial size when their static sizes differ or are unknown; else return x."""
    if x.shape[1:3] == ref.shape[1:3] and None not in x.shape[1:3]:
        return x
    return ResizeLike(name=name)([x, ref])


def upsample(x, filters: int, name: str, mode: str = "bilinear", kernel_size: int = 2, kernel_regularizer=None):
    """×2 upsampling: parameter-free bilinear/nearest, or a learned Conv2DTranspose ("transpose")."""
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, kernel_size, strides=2, padding="same",
                                      kernel_regularizer=kernel_regularizer, name=name)(x)
    if mode in ("bilinear", "nearest"):
        return layers.UpSampling2D(2, interpolation=mode, name=name)(x)
    raise ValueError(f"upsampling must be bilinear, nearest or transpose, got {mode!r}")


def sigmoid_head(x, name: str = "head", out_channels: int | None = None, target: str | None = None):
    """1×1 conv to K logits, sigmoid in float32 (safe under mixed_float16) in a `heads.TargetHead` that records the
    target kind; K = 1 (binary) unless `out_channels` / `target` ask for an instance target (`heads.head_kind`)."""
    return target_head(x, name, out_channels, target)


def image_input(input_shape: tuple, name: str = "image"):
    return keras.Input(shape=input_shape, name=name)
