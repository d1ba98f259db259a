"""Loading saved `.keras` models for prediction, the precision they run in, and models from elsewhere.

Models load in safe mode with `compile=False`: prediction needs the layers only, so the losses and metrics a model
was trained with need not be registered (custom layers are, by `models.layers`). A model trained under mixed
precision (float16 compute, e.g. on a Colab T4) is rebuilt in float32 where there is no GPU: on a CPU float16
convolutions are emulated and several times slower, and the weights are float32 anyway.

Ensemble members (`load_segmentation_models`) may also be Keras 3 segmentation models written without this package:
`as_segmentation_model` checks each one (one image input with 1 or 3 channels, one per-pixel output of the input's
size, a sigmoid or a 2-class softmax) and turns a 2-class softmax into its 1-channel foreground probability; anything
else is an error naming the file (docs/PREDICTION.md, "Models from elsewhere").
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from . import layers as _layers  # noqa: F401  (registers the custom layers for safe-mode loading)
from .heads import output_head

PRECISIONS = ("auto", "float32", "saved")
MEMBER_CHANNELS = (1, 3)   # image channels an ensemble member may take (grey, RGB)


def accelerator_available() -> bool:
    """Whether the Keras backend sees a GPU (TensorFlow or torch backends; False elsewhere)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _with_float32_policies(config):
    """A model config (nested dicts/lists) with every mixed-precision DTypePolicy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith(
                "mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _with_float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_float32_policies(v) for v in config]
    return config


def is_mixed_precision(model) -> bool:
    """True if any layer of `model` (nested sub-models included) computes in float16/bfloat16."""
    def leaves(layer):
        for child in getattr(layer, "layers", []):
            yield child
            yield from leaves(child)

    return any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16") for layer in leaves(model))


def as_float32(model):
    """A float32-compute copy of a model saved under mixed precision (same weights, which mixed precision keeps in
    float32 anyway); the model itself when a layer keeps its float16 policy outside the config."""
    import keras

    clone = model.__class__.from_config(_with_float32_policies(model.get_config()))
    clone.set_weights(model.get_weights())
    if is_mixed_precision(clone):
        return model
    return clone if isinstance(clone, keras.Model) else model


def load_models(paths: Sequence[str | os.PathLike], precision: str = "auto") -> list:
    """Load `.keras` files for prediction -> Keras models, in order.

    precision: "auto" runs models trained under mixed precision in float32 when there is no GPU (a T4-trained model
    predicted on a laptop), "float32" always does, "saved" keeps each layer's saved dtype policy.
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    models = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: model file not found")
        try:
            model = keras.models.load_model(p, compile=False)
        except Exception as exc:
            raise ValueError(f"{p}: cannot load Keras model ({exc})") from exc
        if is_mixed_precision(model) and (precision == "float32" or
                                          (precision == "auto" and not accelerator_available())):
            model = as_float32(model)
        models.append(model)
    return models


def output_activation(model) -> str | None:
    """The activation producing the model's (first) output: "sigmoid", "softmax", "linear", ... read from the last
    layer (its `activation`, e.g. Conv2D(..., activation="sigmoid") or Activation("sigmoid"); "softmax" for a
    Softmax layer; "sigmoid" for the package's TargetHead); None when that layer has none to read."""
    import keras

    head = output_head(model)
    if head is not None:
        return "sigmoid"
    outputs = getattr(model, "outputs", None) or []
    history = getattr(outputs[0], "_keras_history", None) if outputs else None
    layer = getattr(history, "operation", None) if history is not None else None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if callable(activation) else None


def as_segmentation_model(model, path: str | os.PathLike = "<model>"):
    """`model` ready to vote in the ensemble -> the model itself, or an adapted copy (2-class softmax -> its channel
    1 as a (B, H, W, 1) float32 probability, through `layers.SelectChannel`); a ValueError naming `path` when it
    cannot be a member.

    A member has one input (B, H, W, C) with C in MEMBER_CHANNELS and one output (B, H, W, K) of the input's H, W.
    Package models (ending in a TargetHead) keep their K (2 for instance targets). Models from elsewhere need K = 1
    with a sigmoid or K = 2 with a softmax; a last layer whose activation cannot be read (a custom layer) is taken
    to output probabilities, with a warning.
    """
    import keras

    inputs, outputs = list(getattr(model, "inputs", None) or []), list(getattr(model, "outputs", None) or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: has {len(inputs)} input(s) and {len(outputs)} output(s); a segmentation model "
                         "has one image input and one probability map output")
    shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] not in MEMBER_CHANNELS:
        raise ValueError(f"{path}: takes inputs of shape {shape_in[1:]}; an ensemble member takes (H, W, 1) grey "
                         "or (H, W, 3) RGB images, channels last")
    if len(shape_out) != 4:
        raise ValueError(f"{path}: output shape {shape_out[1:]} is not a per-pixel map (H, W, K): not a "
                         "segmentation model")
    for dim_in, dim_out, label in zip(shape_in[1:3], shape_out[1:3], ("height", "width")):
        if dim_in is not None and dim_out is not None and dim_in != dim_out:
            raise ValueError(f"{path}: output {label} {dim_out} differs from its input {label} {dim_in}; an "
                             "ensemble member must output a map of its input's size ('same' padding)")
    if output_head(model) is not None:
        return model                                   # a package model: its TargetHead says what K means
    k, activation = shape_out[-1], output_activation(model)
    if activation is None:
        warnings.warn(f"{path}: cannot tell which activation its last layer applies; its output is taken as "
                      "probabilities in [0, 1] (end the model in a sigmoid to be sure)", stacklevel=2)
        activation = "sigmoid" if k == 1 else "softmax"
    if k == 1 and activation == "sigmoid":
        return model
    if k == 2 and activation == "softmax":
        inp = keras.Input(shape_in[1:], name="image")
        return keras.Model(inp, _layers.SelectChannel(1, name="foreground")(model(inp)), name=model.name)
    if activation == "linear":
        raise ValueError(f"{path}: its output has no activation (logits, not probabilities); end the model in a "
                         "sigmoid (1 channel) or a 2-class softmax")
    raise ValueError(f"{path}: a {k}-channel {activation} output; an ensemble member from elsewhere outputs 1 "
                     "sigmoid channel or a 2-class softmax (channel 1 = foreground)")


def load_segmentation_models(paths: Sequence[str | os.PathLike], precision: str = "auto") -> list:
    """`load_models`, then `as_segmentation_model` on each: the ensemble's members, models from elsewhere adapted
    or refused with an error naming the file."""
    return [as_segmentation_model(m, p) for p, m in zip(paths, load_models(paths, precision))]
