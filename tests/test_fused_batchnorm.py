"""FusedBatchNormalization: same outputs, gradients and moving statistics as keras.layers.BatchNormalization
(training and inference, float32), half-precision inputs, frozen layers, safe-mode `.keras` round trip, zoo use."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cellseg_tf.models import build_model  # noqa: E402
from cellseg_tf.models.blocks import normalization  # noqa: E402
from cellseg_tf.models.fused_batchnorm import FusedBatchNormalization  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="fused path is TensorFlow-only")


def _pair(channels: int, momentum: float = 0.9, seed: int = 0, **kwargs):
    """A built Keras BN and a fused BN holding the same, non-trivial gamma/beta/moving statistics."""
    rng = np.random.default_rng(seed)
    ref = keras.layers.BatchNormalization(momentum=momentum, **kwargs)
    fused = FusedBatchNormalization(momentum=momentum, **kwargs)
    for layer in (ref, fused):
        layer.build((None, 5, 6, channels))
    values = [rng.normal(1.0, 0.3, channels), rng.normal(0.0, 0.5, channels), rng.normal(0.5, 0.5, channels),
              rng.uniform(0.5, 2.0, channels)]
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    for layer in (ref, fused):
        for name, value in zip(names, values):
            getattr(layer, name).assign(value.astype("float32"))
    return ref, fused


def _input(shape=(3, 5, 6, 4), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(2.0, 3.0, shape)).astype("float32")   # mean/scale far from 0/1: statistics matter


def _step(layer, x, training: bool):
    """Output, d(sum(out · w))/d(input, gamma, beta) for a fixed random weighting w."""
    x = tf.constant(x)
    w = tf.constant(np.random.default_rng(7).normal(size=x.shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
    gx, gg, gb = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y.numpy(), gx.numpy(), gg.numpy(), gb.numpy()


@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batchnorm_float32(training):
    ref, fused = _pair(4)
    x = _input()
    for a, b in zip(_step(ref, x, training), _step(fused, x, training)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(fused, name).numpy(), getattr(ref, name).numpy(), rtol=1e-5, atol=1e-6)
    if training:   # statistics moved towards the (biased) batch statistics, as Keras does
        batch_var = x.reshape(-1, 4).var(axis=0)
        expected = 0.9 * _pair(4)[0].moving_variance.numpy() + 0.1 * batch_var
        np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-5)
    else:
        np.testing.assert_array_equal(fused.moving_mean.numpy(), _pair(4)[1].moving_mean.numpy())


def test_repeated_training_steps_in_tf_function_track_keras():
    ref, fused = _pair(3, momentum=0.5)
    for step in range(4):
        x = tf.constant(_input((2, 4, 4, 3), seed=10 + step))
        ya = tf.function(lambda t: ref(t, training=True))(x)
        yb = tf.function(lambda t: fused(t, training=True))(x)
        np.testing.assert_allclose(yb.numpy(), ya.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_layer_uses_moving_statistics_in_training():
    ref, fused = _pair(4)
    ref.trainable = fused.trainable = False
    x = _input()
    before = fused.moving_mean.numpy().copy()
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


def test_without_scale_and_center_matches():
    ref, fused = keras.layers.BatchNormalization(scale=False, center=False), \
        FusedBatchNormalization(scale=False, center=False)
    x = _input()
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5)


def test_falls_back_for_other_shapes_and_masks():
    ref, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    x = _input((4, 7, 3))   # 3-D: parent's call
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(), rtol=1e-5, atol=1e-5)
    ref1, fused1 = keras.layers.BatchNormalization(axis=1), FusedBatchNormalization(axis=1)   # channels-first axis
    x = _input((2, 3, 5, 5))
    np.testing.assert_allclose(fused1(x, training=True).numpy(), ref1(x, training=True).numpy(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_and_keeps_float32_params(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        ref, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
        half = policy.split("_")[1]
        x = tf.cast(tf.constant(_input()), half)
        yr, yf = ref(x, training=True), fused(x, training=True)
        assert keras.backend.standardize_dtype(yf.dtype) == half == keras.backend.standardize_dtype(yr.dtype)
        assert fused.gamma.dtype == fused.moving_mean.dtype == "float32"
        tol = 2e-2 if half == "bfloat16" else 5e-3
        np.testing.assert_allclose(tf.cast(yf, tf.float32).numpy(), tf.cast(yr, tf.float32).numpy(), atol=tol * 4)
        np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=tol, atol=tol)
        yi = fused(x, training=False)
        assert keras.backend.standardize_dtype(yi.dtype) == half and np.isfinite(tf.cast(yi, tf.float32)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_normalization_builds_fused_and_keras_round_trip_safe_mode(tmp_path):
    layer = normalization("bn", "batch")
    assert isinstance(layer, FusedBatchNormalization) and isinstance(layer, keras.layers.BatchNormalization)
    assert layer.momentum == 0.9
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(normalization("bn", "batch")(inputs)))
    x = _input((2, 8, 8, 2))
    model(x, training=True)   # move the statistics away from their initial values
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    assert [w.name for w in loaded.get_layer("bn").weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6,
                               atol=1e-6)


def test_plain_keras_batchnorm_weights_load_into_fused_layer():
    inputs = keras.Input((6, 6, 3))
    plain = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9, name="bn")(inputs))
    fused_in = keras.Input((6, 6, 3))
    fused = keras.Model(fused_in, normalization("bn", "batch")(fused_in))
    plain(_input((2, 6, 6, 3)), training=True)
    fused.set_weights(plain.get_weights())
    x = _input((2, 6, 6, 3), seed=3)
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_default_unet_trains_a_step_with_fused_batchnorm():
    keras.utils.set_random_seed(0)
    model = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(layer, FusedBatchNormalization) for layer in bns)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    before = bns[0].moving_mean.numpy().copy()
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert not np.allclose(bns[0].moving_mean.numpy(), before)


@pytest.mark.parametrize("training", [True, False])
def test_fused_kernel_is_what_runs(training):
    """The 4-D float path really is one FusedBatchNormV3 op (the equality tests alone would pass on the fallback)."""
    layer = FusedBatchNormalization()
    fn = tf.function(lambda t: layer(t, training=training))
    ops = {op.type for op in fn.get_concrete_function(tf.TensorSpec((2, 4, 4, 3))).graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    other = FusedBatchNormalization()
    fallback = tf.function(lambda t: other(t, training=training))
    ops = {op.type for op in fallback.get_concrete_function(tf.TensorSpec((2, 4, 3))).graph.get_operations()}
    assert "FusedBatchNormV3" not in ops


def test_seeded_default_train_reproduces_itself_with_fused_batchnorm(tiny_manifest, tmp_path):
    """The fused kernel keeps a seeded float32 train() run bit-for-bit reproducible on this CPU."""
    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.training.engine import train

    def run(out):
        config = TrainConfig(manifest=str(tiny_manifest), out=str(out), epochs=1, patch_size=32, batch_size=2,
                             steps_per_epoch=3, model_options={"base_filters": 4, "depth": 2}, augmentation="none",
                             verbose=0)
        return keras.models.load_model(train(config).last_model).get_weights()

    first, again = run(tmp_path / "a"), run(tmp_path / "b")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
