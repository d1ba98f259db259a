"""Mixed-scale dense network (`msd`; Pelt & Sethian 2018, the feature extractor of Vădineanu 2025).

No down- or upsampling: every layer sees the full-resolution image. Layer i (0-based) is a 3×3 convolution with
dilation `i % max_dilation + 1` (1, 2, …, 10, 1, 2, …) producing `width` maps, followed by ReLU; its input is the
concatenation of the image and the outputs of ALL earlier layers (dense connectivity), so scales mix without
pooling and the network stays small (width 1: about 3 k weights at depth 25, 12 k at depth 50). The final 1×1
convolution reads the same concatenation ("features": C + depth·width full-resolution maps), which is what few-shot
adaptation (`cellseg_tf.fewshot`) recombines.

(B, H, W, C) in [0, 1] -> (B, H, W, K) float32 probabilities through the zoo's `TargetHead`. Stride 1: any H, W.
Memory: training keeps every layer's concatenated input for the backward pass, about depth²/2 float maps per pixel
(a 128×128 patch: ~21 MB at depth 25, ~85 MB at 50, ~330 MB at 100), and the concatenations make the cost grow
with depth²: on a 2-core CPU a depth-50 MSD predicts ~5× slower than depth 25, hence the default of 25.
"""
from __future__ import annotations

import keras
from keras import layers

from .blocks import image_input, sigmoid_head
from .registry import register_model

DEFAULT_DEPTH = 25      # the paper compares 25, 50 and 100 layers; 25 keeps CPU prediction fast
MAX_DILATION = 10       # dilations cycle 1..10


def msd_dilations(depth: int, max_dilation: int = MAX_DILATION) -> list[int]:
    """Dilation of each layer: 1, 2, …, max_dilation, 1, 2, … (`depth` entries)."""
    return [i % max_dilation + 1 for i in range(depth)]


@register_model("msd", stride=lambda **_: 1)
def build_msd(input_shape: tuple = (None, None, 1), depth: int = DEFAULT_DEPTH, width: int = 1,
              max_dilation: int = MAX_DILATION, name: str = "msd", out_channels: int | None = None,
              target: str | None = None) -> keras.Model:
    """(B, H, W, C) -> (B, H, W, K) float32 probabilities.

    depth: number of dilated layers (the paper uses 25–100); width: maps per layer (1 in the paper);
    max_dilation: dilations cycle 1..max_dilation. `out_channels` / `target`: the output head (1 channel binary, or
    2 for an instance target; `heads.head_kind`).
    """
    if depth < 1 or width < 1 or max_dilation < 1:
        raise ValueError(f"msd needs depth, width and max_dilation >= 1, got {depth}, {width}, {max_dilation}")
    inputs = image_input(input_shape)
    maps = [inputs]
    for i, dilation in enumerate(msd_dilations(depth, max_dilation)):
        x = maps[0] if len(maps) == 1 else layers.Concatenate(name=f"msd{i}_in")(maps)
        x = layers.Conv2D(width, 3, dilation_rate=dilation, padding="same", kernel_initializer="he_normal",
                          name=f"msd{i}_conv")(x)
        maps.append(layers.Activation("relu", name=f"msd{i}_relu")(x))
    features = layers.Concatenate(name="features")(maps)
    return keras.Model(inputs, sigmoid_head(features, out_channels=out_channels, target=target), name=name)
