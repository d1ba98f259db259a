"""FusedBatchNormalization: Keras BatchNormalization computed by TensorFlow's fused kernel on the TF backend.

The one place in the model zoo that calls TensorFlow directly (imported lazily, inside `call`, only when the Keras
backend is TensorFlow); on any other backend, and for inputs the kernel does not cover, the layer is exactly
keras.layers.BatchNormalization. Registered so `.keras` files load in safe mode without custom_objects.
"""
from __future__ import annotations

import keras
from keras import layers

# cuDNN's fused batch norm rejects a smaller epsilon (tf.keras 2 clamped to this value for the same reason).
_FUSED_MIN_EPSILON = 1.001e-5
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="cellseg_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel (FusedBatchNormV3) where it applies.

    Why: Keras 3's BatchNormalization builds batch norm from many small ops (moments, rsqrt, multiply-adds, casts);
    on a CPU these dominate a small U-Net's training step. The fused kernel does the same arithmetic in one op
    forward and one backward. Same weights (gamma, beta, moving_mean, moving_variance), same config and the same
    maths as the parent: in training the batch statistics normalise and the moving statistics follow
    `moving = moving · momentum + batch · (1 − momentum)` with the *biased* batch variance (the kernel reports the
    Bessel-corrected one, which is converted back); in inference (or when the layer is frozen, `trainable=False`)
    the moving statistics normalise.

    Fused path: TensorFlow backend, 4-D (B, H, W, C) float16/bfloat16/float32 input normalised over the last axis,
    no mask, no renorm, not synchronized, epsilon ≥ 1.001e-5. Half-precision inputs go into the kernel as they are
    (it accumulates statistics in float32 with float32 gamma/beta); the output has the layer's compute dtype, as
    with the parent. Anything else (other backends, shapes, options) runs the parent's `call` unchanged.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not self.synchronized
                and self.epsilon >= _FUSED_MIN_EPSILON
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            shape = tf.shape(inputs)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * (tf.maximum(n - 1.0, 0.0) / tf.maximum(n, 1.0))    # unbiased -> biased
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_variance = tf.cast(self.moving_variance, tf.float32)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


__all__ = ["FusedBatchNormalization"]
