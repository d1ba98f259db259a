"""Feature extractors for few-shot adaptation, and the adapted model built on them.

Any segmentation model of the package is a feature extractor: its features are the input of the final 1×1
convolution (the classifier) that produces its output — the U-Net's last decoder block, an encoder U-Net's last
decoder block, all maps of an MSD network. `feature_tensor` finds that convolution by walking back from the model's
output through single-input layers (the sigmoid / `TargetHead`), so it works for models saved before or after the
zoo's registered head existed. With `levels` > 1 the coarser maps those features were computed from are added,
upsampled to full resolution (`coarser_maps`: a U-Net's decoder block outputs at strides 2, 4, ...), so the
perceptron also sees the network's wider-context features, not only its last block's.

The adapted model is an ordinary `.keras` model:
    image (B, H, W, C) -> [frozen extractor 0 features | extractor 1 features | ... | image filters] (B, H, W, d)
          -> Conv2D(1, 1) "fewshot_logits" (kernel = W, bias = b) -> TargetHead("binary") "fewshot_sigmoid" float32
so prediction, the ensemble voter and evaluation use it unchanged, and it loads in safe mode.
"""
from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

HEAD = "fewshot"          # the head's layers: fewshot_logits (the 1×1 conv), fewshot_sigmoid (TargetHead)
FILTERS = "image_filters"  # the layer of the image's own filter responses (optional)
MAX_TRAILING_LAYERS = 4   # single-input layers allowed between the classifier conv and the output
PROBE_SIZE = 256          # input side used to infer map strides of a model saved without a fixed input size


@dataclass
class Extractor:
    """A loaded model and its feature tensor. input_shape: (H | None, W | None, C); n_features: d of its maps;
    strides: the stride of each map level in the features (1 = the last block's; 2, 4, ...: coarser maps added)."""

    path: str
    model: object
    features: object
    input_shape: tuple
    n_features: int
    strides: list = field(default_factory=lambda: [1])

    @property
    def name(self) -> str:
        return self.model.name


def feature_tensor(model, path: str | os.PathLike = "<model>"):
    """The input tensor of the final 1×1 Conv2D that produces `model`'s (first) output: (B, H, W, d).

    Raises ValueError naming `path` when the model does not end in a 1×1 convolution (plus at most a few
    single-input layers such as a sigmoid), i.e. is not a segmentation model of this package's kind.
    """
    import keras

    outputs = getattr(model, "outputs", None) or []
    if not outputs or len(outputs[0].shape) != 4:
        raise ValueError(f"{path}: not a segmentation model: its output is not an image-shaped (B, H, W, K) tensor")
    tensor = outputs[0]
    for _ in range(MAX_TRAILING_LAYERS + 1):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            break
        layer = history.operation
        inputs = layer._inbound_nodes[history.node_index].input_tensors
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1) and len(inputs) == 1:
            return inputs[0]
        if len(inputs) != 1:
            break
        tensor = inputs[0]
    raise ValueError(f"{path}: not a segmentation model of this package: no final 1×1 Conv2D classifier found "
                     "before its output, so there are no features to recombine")


def _ancestors(tensor) -> list:
    """The tensors `tensor` was computed from, nearest first (breadth-first over the functional graph)."""
    seen, order, queue = {id(tensor)}, [], deque([tensor])
    while queue:
        history = getattr(queue.popleft(), "_keras_history", None)
        if history is None:
            continue
        for parent in history.operation._inbound_nodes[history.node_index].input_tensors:
            if id(parent) not in seen:
                seen.add(id(parent))
                order.append(parent)
                queue.append(parent)
    return order


def _map_strides(model, tensors: list) -> list[int | None]:
    """Stride of each (B, h, w, c) tensor relative to the model's input (None: not an integer stride). Static shapes
    when the model has a fixed input size, else shapes inferred symbolically for a PROBE_SIZE² input (no compute)."""
    import keras

    if not tensors:
        return []
    size = model.inputs[0].shape[1]
    shapes = [t.shape for t in tensors]
    if size is None or any(s[1] is None for s in shapes):
        size = PROBE_SIZE
        probe = keras.Model(model.inputs[0], tensors)
        spec = probe.compute_output_spec(keras.KerasTensor((1, size, size, model.inputs[0].shape[-1])))
        shapes = [t.shape for t in (spec if isinstance(spec, (list, tuple)) else [spec])]
    return [size // s[1] if s[1] and size % s[1] == 0 else None for s in shapes]


def coarser_maps(model, features, levels: int) -> list[tuple[object, int]]:
    """[(tensor, stride)] for strides 2, 4, ..., 2^(levels−1): per stride, the map of that stride nearest to
    `features` in the graph — in a U-Net the decoder block that was upsampled into the next finer one (the encoder's
    maps of that stride lie further back). Stops at the first stride the model does not have (an MSD has none)."""
    import keras

    if levels <= 1:
        return []
    candidates = [t for t in _ancestors(features) if len(t.shape) == 4
                  and not isinstance(t._keras_history.operation, keras.layers.InputLayer)]
    first: dict[int, object] = {}
    for tensor, stride in zip(candidates, _map_strides(model, candidates)):
        if stride and stride > 1 and stride not in first:
            first[stride] = tensor
    found = []
    for level in range(1, levels):
        if 2 ** level not in first:
            break
        found.append((first[2 ** level], 2 ** level))
    return found


def as_extractor(model, path: str | os.PathLike = "<model>", levels: int = 1) -> Extractor:
    """Wrap a (loaded) model: find its features and check they have the input's spatial size. `levels` > 1 adds
    the coarser maps of `coarser_maps`, each upsampled bilinearly to full resolution (as the decoder upsamples)."""
    import keras

    if levels < 1:
        raise ValueError(f"feature levels must be >= 1, got {levels}")
    features = feature_tensor(model, path)
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ValueError(f"{path}: expected an image input (H, W, C), got {shape}")
    in_hw, out_hw = shape[:2], tuple(features.shape[1:3])
    if any(a is not None and b is not None and a != b for a, b in zip(in_hw, out_hw)):
        raise ValueError(f"{path}: its features are {out_hw[0]}×{out_hw[1]} for a {in_hw[0]}×{in_hw[1]} input; "
                         "few-shot adaptation needs full-resolution features")
    coarse = coarser_maps(model, features, levels)
    if coarse:
        up = [keras.layers.UpSampling2D(stride, interpolation="bilinear", name=f"fewshot_up{stride}")(tensor)
              for tensor, stride in coarse]
        features = keras.layers.Concatenate(name="fewshot_levels")([features, *up])
    return Extractor(str(path), model, features, shape, int(features.shape[-1]), [1] + [s for _, s in coarse])


def load_extractors(paths: Sequence[str | os.PathLike], levels: int = 1) -> list[Extractor]:
    """Load `.keras` files (float32, safe mode) as extractors (`levels`: see `as_extractor`); errors name the file."""
    from ..models.loading import load_models

    if not paths:
        raise ValueError("give at least one feature extractor (.keras)")
    return [as_extractor(model, path, levels)
            for path, model in zip(paths, load_models(list(paths), precision="float32"))]


def common_input_shape(extractors: Sequence[Extractor]) -> tuple:
    """The input shape all extractors accept: (H, W, C) with H, W fixed if any extractor fixes them, else None.

    Raises ValueError naming the file when channels or fixed sizes disagree with the first extractor.
    """
    first = extractors[0]
    size: tuple | None = None
    owner = first.path
    for ex in extractors:
        if ex.input_shape[2] != first.input_shape[2]:
            raise ValueError(f"{ex.path}: takes {ex.input_shape[2]}-channel images but {first.path} takes "
                             f"{first.input_shape[2]}; extractors must share their input channels")
        if None not in ex.input_shape[:2]:
            if size is not None and tuple(ex.input_shape[:2]) != size:
                raise ValueError(f"{ex.path}: input size {ex.input_shape[0]}×{ex.input_shape[1]} differs from "
                                 f"{owner}'s {size[0]}×{size[1]}; extractors must share their input size")
            size, owner = tuple(ex.input_shape[:2]), ex.path
    return (*(size or (None, None)), first.input_shape[2])


def _layer_name(i: int, name: str) -> str:
    return f"extractor{i}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def build_adapted_model(extractors: Sequence[Extractor], input_shape: tuple | None = None,
                        filter_sigmas: Sequence[float] = ()):
    """(adapted model, feature model) sharing one graph. The feature model maps (B, H, W, C) images to the
    concatenated (B, H, W, d) features the head reads: each extractor's, then (when `filter_sigmas` is not empty)
    the image's own Gaussian-derivative filter responses (`models.layers.ImageFilters`, layer "image_filters").
    The adapted model's head starts at zero weights (set them with `set_head`). Extractors are frozen."""
    import keras

    from ..models.heads import target_head
    from ..models.layers import ImageFilters

    input_shape = tuple(input_shape or common_input_shape(extractors))
    inputs = keras.Input(shape=input_shape, name="image")
    maps = []
    for i, ex in enumerate(extractors):
        sub = keras.Model(ex.model.inputs[0], ex.features, name=_layer_name(i, ex.name))
        sub.trainable = False
        maps.append(sub(inputs))
    if filter_sigmas:
        maps.append(ImageFilters(filter_sigmas, name=FILTERS)(inputs))
    features = maps[0] if len(maps) == 1 else keras.layers.Concatenate(name="features")(maps)
    outputs = target_head(features, name=HEAD, out_channels=1)
    model = keras.Model(inputs, outputs, name="fewshot_adapted")
    set_head(model, np.zeros(int(features.shape[-1]), np.float32), 0.0)
    return model, keras.Model(inputs, features, name="fewshot_features")


def set_head(model, kernel: np.ndarray, bias: float) -> None:
    """Write the perceptron into the adapted model's 1×1 convolution: kernel (d,), bias scalar (float32)."""
    conv = model.get_layer(f"{HEAD}_logits")
    k = np.asarray(kernel, np.float32).reshape(1, 1, -1, 1)
    conv.set_weights([k, np.array([bias], np.float32)])


def head_weights(model) -> tuple[np.ndarray, float]:
    """(kernel (d,), bias) of the adapted model's 1×1 convolution."""
    k, b = model.get_layer(f"{HEAD}_logits").get_weights()
    return k.reshape(-1), float(b[0])
