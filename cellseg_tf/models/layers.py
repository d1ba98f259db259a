"""Custom Keras layers of the model zoo, each registered so `.keras` files load in safe mode without custom_objects.

Written with `keras.ops` only (backend-agnostic). Import this module (or `cellseg_tf.models`) before
`keras.models.load_model` so the classes are registered.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

_PACKAGE = "cellseg_tf"

# ImageNet statistics as used by keras.applications' `preprocess_input` functions.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("caffe", "torch", "tf", "raw255", "raw255_std_fix", "none")
FILTER_TRUNCATE = 3.0     # Gaussian filter radius in σ (the kernels hold 99.7 % of the mass)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WSConv2D(layers.Conv2D):
    """Conv2D with weight standardisation (Qiao et al. 2019; the "WSConv" of Chen et al. 2025, Fig. 1).

    Each output filter's kernel is standardised to zero mean / unit variance over (kh, kw, C_in) before the
    convolution, which smooths the loss landscape for small-batch training. With `scaled=True` (default) it is then
    divided by sqrt(kh·kw·C_in) ("scaled WS", Brock et al. 2021) so activations keep their magnitude: unit-variance
    kernels grow activations ~sqrt(fan_in)× per layer, which overflows float16 under mixed precision before
    BatchNorm statistics have adapted. A following BatchNorm makes the two variants equivalent.
    Same arguments as Conv2D plus `epsilon` and `scaled`.
    """

    def __init__(self, *args, epsilon: float = 1e-5, scaled: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = float(epsilon)
        self.scaled = bool(scaled)

    def standardized_kernel(self, kernel=None):
        """The kernel actually convolved: (kh, kw, C_in, filters), standardised per filter (computed in float32)."""
        k = ops.cast(self.kernel if kernel is None else kernel, "float32")
        mean = ops.mean(k, axis=(0, 1, 2), keepdims=True)
        var = ops.var(k, axis=(0, 1, 2), keepdims=True)
        k = (k - mean) / ops.sqrt(var + self.epsilon)
        if self.scaled:
            fan_in = k.shape[0] * k.shape[1] * k.shape[2]
            k = k / float(fan_in) ** 0.5
        return k

    def convolution_op(self, inputs, kernel):
        k = ops.cast(self.standardized_kernel(kernel), inputs.dtype)
        return super().convolution_op(inputs, k)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon, "scaled": self.scaled}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelRepeat(layers.Layer):
    """(B, H, W, 1) -> (B, H, W, repeats): feeds grey images to encoders pretrained on RGB."""

    def __init__(self, repeats: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.repeats = int(repeats)

    def call(self, inputs):
        return ops.repeat(inputs, self.repeats, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] * self.repeats if input_shape[-1] is not None else None)

    def get_config(self) -> dict:
        return {**super().get_config(), "repeats": self.repeats}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImageNetPreprocess(layers.Layer):
    """Maps [0, 1] RGB images to what a keras.applications backbone expects, inside the model.

    Equivalent to `keras.applications.<net>.preprocess_input(255 * x)`:
    - "caffe" (VGG16, ResNet50): RGB->BGR, ×255, minus the ImageNet BGR mean.
    - "torch" (DenseNet121): (x - mean) / std with ImageNet RGB statistics.
    - "tf" (MobileNetV2, InceptionV3): 2x - 1, i.e. [-1, 1].
    - "raw255" (EfficientNet, which rescales/normalises internally): ×255.
    - "raw255_std_fix" (EfficientNet with weights loaded from a file): keras.applications adds its final
      1/sqrt(stddev) rescaling only when built with weights="imagenet", so a file-loaded network normalises
      u ∈ [0, 1] to (u − m)/sqrt(s) instead of (u − m)/s (m, s: ImageNet mean/std). Feeding
      255·(m + (u − m)/sqrt(s)) makes its internal normalisation give exactly (u − m)/s.
    - "none": identity.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode must be one of {PREPROCESS_MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = inputs
        dtype = x.dtype
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) * 255.0
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN_RGB, dtype=dtype)
            std = ops.convert_to_tensor(_TORCH_STD_RGB, dtype=dtype)
            return (x - mean) / std
        if self.mode == "tf":
            return x * 2.0 - 1.0
        if self.mode == "raw255":
            return x * 255.0
        if self.mode == "raw255_std_fix":
            mean = ops.convert_to_tensor(_TORCH_MEAN_RGB, dtype=dtype)
            root_std = ops.convert_to_tensor([s ** 0.5 for s in _TORCH_STD_RGB], dtype=dtype)
            return (mean + (x - mean) / root_std) * 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResizeLike(layers.Layer):
    """Resizes x (B, h, w, C) to the spatial size of ref (B, H, W, ·): aligns decoder maps with skips.

    Needed where a backbone's 'valid' convolutions make feature maps that are not exact halvings (InceptionV3).
    Called as `ResizeLike()([x, ref])`; the output keeps x's dtype.
    """

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        x, ref = inputs
        shape = ops.shape(ref)
        out = ops.image.resize(x, (shape[1], shape[2]), interpolation=self.interpolation)
        return ops.cast(out, x.dtype)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SelectChannel(layers.Layer):
    """(B, H, W, K) -> (B, H, W, 1) float32: channel `channel` of a map, e.g. the foreground probability of a
    2-class softmax model from elsewhere (`models.loading.as_segmentation_model`)."""

    def __init__(self, channel: int = 1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.channel = int(channel)

    def call(self, x):
        return ops.cast(x[..., self.channel:self.channel + 1], "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self) -> dict:
        return {**super().get_config(), "channel": self.channel}


def filter_radius(sigma: float, truncate: float = FILTER_TRUNCATE) -> int:
    """Half-width r of the Gaussian kernels at σ: ceil(truncate·σ), at least 1; an image needs more than r pixels
    each way to be reflect-padded by r."""
    return max(1, int(math.ceil(truncate * sigma)))


def gaussian_kernels(sigma: float, truncate: float = FILTER_TRUNCATE):
    """(g, g', g'') 1-D Gaussian and its first two derivatives, each (2r + 1,) float64, r = `filter_radius`.

    g sums to 1; g' and g'' are the exact derivatives of the sampled Gaussian, so g' * x estimates ∂x and g'' * x
    estimates ∂²x of the σ-smoothed image."""
    import numpy as np

    radius = filter_radius(sigma, truncate)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    return g, -t / sigma ** 2 * g, (t ** 2 / sigma ** 4 - 1 / sigma ** 2) * g


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImageFilters(layers.Layer):
    """A fixed bank of Gaussian-derivative filters: (B, H, W, C) image -> (B, H, W, C·(1 + 5·len(sigmas))) float32.

    Per channel: the image itself, then per σ the smoothed image, its local standard deviation (texture),
    σ·|gradient| (edges) and the two σ²-scaled Hessian eigenvalues (ridges, valleys and blobs, larger one first).
    No weights: the kernels follow from `sigmas`, so the layer saves and loads as its config. Borders are
    reflect-padded, so the image must be more than 3σ pixels high and wide. These are the classical pixel features of
    interactive classifiers; few-shot adaptation adds them to the extractors' features (docs/FEWSHOT.md).
    """

    FEATURES = ("smoothed", "local_std", "gradient", "hessian_max", "hessian_min")

    def __init__(self, sigmas=(1.0, 2.0, 4.0, 8.0), **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.sigmas = tuple(float(s) for s in sigmas)
        if not self.sigmas or min(self.sigmas) <= 0:
            raise ValueError(f"filter sigmas must be positive numbers, got {list(sigmas)}")

    @property
    def features_per_channel(self) -> int:
        return 1 + len(self.FEATURES) * len(self.sigmas)

    def _separable(self, x, kernels_x, kernels_y, radius: int):
        """Every (kx, ky) pair of 1-D kernels applied to each channel of x (B, H, W, C): list over ky of
        (B, H, W, C·len(kx)) maps, channel c·len(kx) + i holding kx[i] along x then ky along y."""
        import numpy as np

        channels = x.shape[-1]
        x = ops.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="reflect")
        kx = np.stack(kernels_x, -1)[None, :, None, :]                      # (1, k, 1, m)
        rows = ops.depthwise_conv(x, ops.convert_to_tensor(np.tile(kx, (1, 1, channels, 1)), "float32"),
                                  padding="valid")
        out = []
        for ky in kernels_y:
            k = ops.convert_to_tensor(np.tile(ky[:, None, None, None], (1, 1, channels * len(kernels_x), 1)),
                                      "float32")
            out.append(ops.depthwise_conv(rows, k, padding="valid"))
        return out

    def call(self, x):
        x = ops.cast(x, "float32")
        channels = x.shape[-1]
        per_channel = [[x[..., c:c + 1]] for c in range(channels)]
        squares = x * x                                                       # smoothed: the local variance
        for sigma in self.sigmas:
            g, d1, d2 = gaussian_kernels(sigma)
            radius = len(g) // 2
            smooth_sq, = self._separable(squares, [g], [g], radius)          # (B, H, W, C): local mean of x²
            by_y = self._separable(x, [g, d1, d2], [g, d1, d2], radius)       # by_y[j][..., 3c + i]: d^i_x d^j_y
            for c in range(channels):
                mean, sq = by_y[0][..., 3 * c:3 * c + 1], smooth_sq[..., c:c + 1]
                std = ops.sqrt(ops.maximum(sq - mean * mean, 0.0) + 1e-12)
                ix, iy = by_y[0][..., 3 * c + 1:3 * c + 2], by_y[1][..., 3 * c:3 * c + 1]
                ixx, iyy = by_y[0][..., 3 * c + 2:3 * c + 3], by_y[2][..., 3 * c:3 * c + 1]
                ixy = by_y[1][..., 3 * c + 1:3 * c + 2]
                grad = sigma * ops.sqrt(ix * ix + iy * iy + 1e-12)
                half_trace, half_diff = (ixx + iyy) / 2, (ixx - iyy) / 2
                root = ops.sqrt(half_diff * half_diff + ixy * ixy + 1e-12)
                s2 = sigma * sigma
                per_channel[c] += [mean, std, grad, s2 * (half_trace + root), s2 * (half_trace - root)]
        return ops.concatenate([m for maps in per_channel for m in maps], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] * self.features_per_channel,)

    def get_config(self) -> dict:
        return {**super().get_config(), "sigmas": list(self.sigmas)}


__all__ = ["WSConv2D", "ChannelRepeat", "ImageNetPreprocess", "ResizeLike", "SelectChannel", "ImageFilters",
           "filter_radius", "gaussian_kernels", "PREPROCESS_MODES"]
