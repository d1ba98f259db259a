"""The output head of every zoo model: logits -> float32 sigmoid maps, labelled with the target they predict.

`TargetHead(kind)` is the last layer of every model built by the zoo. Its `kind` ("binary" | "contour" |
"distance", see `cellseg_tf.data.targets`) travels in the `.keras` file, so a checkpoint copied alone says what its
channels mean; `target_kind(model)` reads it back ("binary" for models saved before the head existed).
Channel 0 is always the foreground probability.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ..data.targets import DEFAULT_INSTANCE_TARGET, TARGETS, check_target, target_channels


def head_kind(out_channels: int | None = None, target: str | None = None) -> str:
    """The target kind of a head from a builder's `out_channels` and `target` options.

    Neither: "binary". Only out_channels: 1 -> "binary", 2 -> the default instance target ("distance"). Only
    target: that kind. Both: they must agree (target_channels(target) == out_channels).
    """
    if target is not None:
        kind = check_target(target)
        if out_channels is not None and int(out_channels) != target_channels(kind):
            raise ValueError(f"out_channels={out_channels} does not fit target {kind!r}, which has "
                             f"{target_channels(kind)} channel(s)")
        return kind
    if out_channels is None or int(out_channels) == 1:
        return "binary"
    if int(out_channels) == TARGETS[DEFAULT_INSTANCE_TARGET]:
        return DEFAULT_INSTANCE_TARGET
    raise ValueError(f"out_channels must be 1 (binary) or 2 (contour, distance), got {out_channels}")


@keras.saving.register_keras_serializable(package="cellseg_tf")
class TargetHead(layers.Layer):
    """(B, H, W, K) logits -> (B, H, W, K) float32 probabilities, K = channels of target `kind`.

    Computes in float32 whatever the global policy (mixed_float16 safe: the sigmoid and everything after it, losses
    included, see float32 values). `kind` is in get_config, so it survives a `.keras` round trip (safe_mode); so is
    `info`, the flat dict of what prediction needs to know about the model (`models.metadata`: normalisation,
    channels, patch size, ...), empty until `metadata.describe` fills it.
    """

    def __init__(self, kind: str = "binary", info: dict | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.kind = check_target(kind)
        self.channels = target_channels(self.kind)
        self.info = dict(info or {})

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != self.channels:
            raise ValueError(f"TargetHead(kind={self.kind!r}) needs {self.channels} input channel(s), "
                             f"got {input_shape[-1]}")
        super().build(input_shape)

    def call(self, logits):
        return ops.sigmoid(ops.cast(logits, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "info": dict(self.info)}


def target_head(x, name: str = "head", out_channels: int | None = None, target: str | None = None):
    """1×1 conv to K logits, then `TargetHead` (float32 sigmoid) named `{name}_sigmoid`; K from `head_kind`."""
    kind = head_kind(out_channels, target)
    x = layers.Conv2D(target_channels(kind), 1, name=f"{name}_logits")(x)
    return TargetHead(kind, name=f"{name}_sigmoid")(x)


def output_head(model) -> "TargetHead | None":
    """The TargetHead producing the model's (first) output, or None (a model from elsewhere, or saved before the
    head existed: those end in a sigmoid Activation)."""
    layer = None
    outputs = getattr(model, "outputs", None) or []
    if outputs:
        history = getattr(outputs[0], "_keras_history", None)
        layer = getattr(history, "operation", None) if history is not None else None
    if layer is None and getattr(model, "layers", None):
        layer = model.layers[-1]
    return layer if isinstance(layer, TargetHead) else None


def target_kind(model) -> str:
    """What a model's output channels mean: the `kind` of its final TargetHead, or "binary" when the output does
    not come from one (checkpoints saved before TargetHead existed end in a sigmoid Activation)."""
    head = output_head(model)
    return head.kind if head is not None else "binary"


__all__ = ["TargetHead", "head_kind", "output_head", "target_head", "target_kind"]
