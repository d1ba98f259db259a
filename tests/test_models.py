"""Model zoo: registry, shapes/dtypes, safe-mode round trips, frozen encoders, mixed precision, custom layers.

Big encoders are built at their smallest sizes (64 px; InceptionV3 96 px) with encoder_weights=None; the heaviest
round trips / training steps take a few seconds each; every model is covered by the default suite.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cellseg_tf.models import available_models, build_model, model_stride  # noqa: E402
from cellseg_tf.models.backbones import BACKBONES, build_backbone  # noqa: E402
from cellseg_tf.models.blocks import attention_gate  # noqa: E402
from cellseg_tf.models.layers import ChannelRepeat, ImageNetPreprocess, ResizeLike, WSConv2D  # noqa: E402

REQUIRED = {"unet", "attention_unet", "vgg16_unet", "densenet121_unet", "resnet50_unet", "mobilenetv2_unet",
            "efficientnetb0_unet", "inceptionv3_unet", "densenet121_deconv_unet", "vgg16_attention_unet",
            "vgg16_attention_ia_unet"}
# names of earlier versions, kept as aliases so saved configs and scripts still build
ALIASES = {"model1_densenet": "densenet121_deconv_unet", "model2_vgg_attention": "vgg16_attention_unet",
           "model3_vgg_attention_ia": "vgg16_attention_ia_unet"}
ENCODER_MODELS = sorted(REQUIRED - {"unet", "attention_unet"})
ENCODER_NAME = {"densenet121_deconv_unet": "densenet121_encoder", "vgg16_attention_unet": "vgg16_encoder",
                "vgg16_attention_ia_unet": "vgg16_encoder"}
SMALL_OPTIONS = {"unet": dict(base_filters=4, depth=3),
                 "attention_unet": dict(base_filters=4, depth=3, weight_standardization=True)}


def _size(name: str) -> int:
    return 96 if name.startswith("inceptionv3") else 64


def _build(name: str, channels: int = 1, **options):
    size = _size(name)
    return build_model(name, input_shape=(size, size, channels), **{**SMALL_OPTIONS.get(name, {}), **options})


def _batch(name: str, channels: int = 1, n: int = 2, seed: int = 0) -> np.ndarray:
    size = _size(name)
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


def _encoder(model, name: str):
    return model.get_layer(ENCODER_NAME.get(name, name.replace("_unet", "_encoder")))


# ----------------------------------------------------------------------------------------------- registry / API
def test_registry_has_every_required_model_and_stride():
    assert REQUIRED <= set(available_models())
    assert model_stride("unet") == 16 and model_stride("unet", depth=3) == 8
    assert model_stride("vgg16_unet") == 16 and model_stride("vgg16_attention_unet") == 16
    for name in ("densenet121_unet", "resnet50_unet", "mobilenetv2_unet", "efficientnetb0_unet", "inceptionv3_unet",
                 "densenet121_deconv_unet", "vgg16_attention_ia_unet"):
        assert model_stride(name) == 32


def test_earlier_model_names_still_build_and_load_from_a_saved_config(tmp_path):
    from cellseg_tf.models import canonical_name, default_learning_rate
    from cellseg_tf.training.config import TrainConfig

    assert not set(ALIASES) & set(available_models())                 # listed once, under the new name
    assert set(ALIASES) <= set(available_models(include_aliases=True))
    for old, new in ALIASES.items():
        assert canonical_name(old) == new and model_stride(old) == model_stride(new)
        assert default_learning_rate(old) == default_learning_rate(new)
    path = TrainConfig(model="model2_vgg_attention", model_options={"decoder_filters": [8, 8, 8, 8]}).save(
        tmp_path / "config.yaml")
    config = TrainConfig.load(path)
    model = build_model(config.model, input_shape=(32, 32, 1), **config.model_options)
    reference = build_model("vgg16_attention_unet", input_shape=(32, 32, 1), decoder_filters=(8, 8, 8, 8))
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert model.get_layer("att0_psi") is not None and model.name == "vgg16_attention_unet"


def test_build_rejects_sizes_breaking_stride_or_minimum():
    with pytest.raises(ValueError, match="divisible by its stride 16"):
        build_model("unet", input_shape=(60, 64, 1))
    with pytest.raises(ValueError, match="stride 32"):
        build_model("mobilenetv2_unet", input_shape=(64, 80, 1))
    with pytest.raises(ValueError, match="at least 96"):
        build_model("inceptionv3_unet", input_shape=(64, 64, 1))   # divisible by 32 but below Inception's minimum
    with pytest.raises(ValueError, match="1 \\(grey"):
        build_model("mobilenetv2_unet", input_shape=(64, 64, 2))
    with pytest.raises(KeyError, match="unknown model"):
        build_model("nope")


def test_unet_keeps_its_structure():
    model = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    bn = model.get_layer("enc0_a_bn")
    assert bn.momentum == pytest.approx(0.9)
    assert model.get_layer("enc0_a_conv").kernel_initializer.__class__.__name__ == "HeNormal"
    assert [layer.name for layer in model.layers if layer.name.startswith("up")] == ["up1", "up0"]
    assert model.output.shape == (None, 32, 32, 1)


def test_double_conv_drops_out_after_each_conv():
    """(conv, BN, ReLU, dropout) ×2 per DoubleConv; no Dropout layers at all when dropout = 0."""
    model = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=2, dropout=0.2)
    names = [layer.name for layer in model.layers]
    for block in ("enc0", "enc1", "bottleneck", "dec1", "dec0"):
        a, b = names.index(f"{block}_a_relu"), names.index(f"{block}_b_relu")
        assert names[a + 1] == f"{block}_a_drop" and names[b + 1] == f"{block}_b_drop"
        assert model.get_layer(f"{block}_b_drop").rate == pytest.approx(0.2)
    plain = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in plain.layers)


def test_model_code_uses_keras_ops_only():
    """Backend-agnostic: no TensorFlow in model code (KERAS_BACKEND=torch must work in principle), no Lambda."""
    src = Path(__file__).resolve().parents[1] / "cellseg_tf" / "models"
    for path in src.glob("*.py"):
        text = path.read_text()
        assert "Lambda(" not in text, path
        if path.name == "loading.py":   # loads .keras files and checks devices: not model code
            continue
        if path.name == "fused_batchnorm.py":   # TF's fused kernel behind a backend check: import inside call only
            assert not re.search(r"^(import|from)\s+tensorflow", text, re.M), path
            continue
        assert not re.search(r"^\s*(import|from)\s+tensorflow", text, re.M), path
        assert not re.search(r"\btf\.", text), path


# ------------------------------------------------------------------------------------------- every model, small
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_forward_shape_dtype_range(name):
    model = _build(name)
    x = _batch(name)
    y = np.asarray(model(x, training=False))
    assert y.shape == x.shape[:3] + (1,)
    assert model.output.dtype == "float32" and y.dtype == np.float32
    assert np.all((y >= 0) & (y <= 1)) and np.isfinite(y).all()
    if name == "inceptionv3_unet":   # skips given by layer index must be the stem activations (64, 192 channels)
        assert [o.shape[-1] for o in _encoder(model, name).outputs] == [64, 192, 288, 768, 2048]
        assert isinstance(model.get_layer("out_align"), ResizeLike)


ROUND_TRIP = [pytest.param(n, {}, id=n) for n in sorted(REQUIRED)] + [
    pytest.param("vgg16_attention_ia_unet", {"normalization": "instance"}, id="vgg16_attention_ia_unet-instance")]


@pytest.mark.parametrize("name,options", ROUND_TRIP)
def test_keras_round_trip_safe_mode_identical(name, options, tmp_path):
    model = _build(name, **options)
    x = _batch(name, seed=1)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)   # no custom_objects
    if name == "attention_unet":
        assert isinstance(loaded.get_layer("enc0_a_conv"), WSConv2D)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(loaded(x, training=False)))
    assert len(loaded.trainable_weights) == len(model.trainable_weights)


@pytest.mark.parametrize("name", ENCODER_MODELS)
def test_frozen_encoder_unchanged_decoder_trains(name):
    model = _build(name)
    encoder = _encoder(model, name)
    assert not encoder.trainable_weights                 # frozen by default
    before_enc = [np.array(w) for w in encoder.weights]  # includes BatchNorm moving statistics
    before_dec = [np.array(w) for w in model.trainable_weights]
    # run_eagerly: ~10x faster than tracing the graph for a single step
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", run_eagerly=True)
    x = _batch(name)
    y = (x[..., :1] > 0.5).astype("float32")
    model.train_on_batch(x, y)
    for b, w in zip(before_enc, encoder.weights):
        np.testing.assert_array_equal(b, np.asarray(w), err_msg=w.path)
    changed = [not np.array_equal(b, np.asarray(w)) for b, w in zip(before_dec, model.trainable_weights)]
    assert np.mean(changed) > 0.9, f"only {sum(changed)}/{len(changed)} decoder weights changed"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_mixed_precision_output_is_float32(name):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _build(name)   # attention_unet: with WSConv2D
    y = model(_batch(name), training=False)
    assert model.output.dtype == "float32" and keras.backend.standardize_dtype(y.dtype) == "float32"
    assert np.isfinite(np.asarray(y)).all()
    assert model.get_layer("head_logits").compute_dtype == "float16"


def test_inception_aligns_valid_padding_at_two_sizes():
    for size in (96, 128):
        model = build_model("inceptionv3_unet", input_shape=(size, size, 3))
        assert model.output.shape == (None, size, size, 1)
        assert isinstance(model.get_layer("out_align"), ResizeLike)
        y = np.asarray(model(np.random.default_rng(size).random((1, size, size, 3)).astype("float32")))
        assert y.shape == (1, size, size, 1) and np.isfinite(y).all()


# ----------------------------------------------------------------- parameter counts published by Das et al. 2025
@pytest.mark.parametrize("name,total_m,trainable_m", [("densenet121_deconv_unet", 22.7, 15.7),
                                                      ("vgg16_attention_unet", 18.8, 4.09),
                                                      ("vgg16_attention_ia_unet", 28.85, 14.1)])
def test_published_parameter_counts_within_10_percent(name, total_m, trainable_m):
    model = build_model(name, input_shape=(256, 256, 3))
    total = sum(int(np.prod(w.shape)) for w in model.weights) / 1e6
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights) / 1e6
    assert total == pytest.approx(total_m, rel=0.10)
    assert trainable == pytest.approx(trainable_m, rel=0.10)


# ------------------------------------------------------------------------------------------- encoder options
def test_grey_input_equals_repeated_rgb():
    grey = build_model("vgg16_unet", input_shape=(32, 32, 1))
    rgb = build_model("vgg16_unet", input_shape=(32, 32, 3))
    rgb.set_weights(grey.get_weights())                   # ChannelRepeat has no weights: same weight list
    x = np.random.default_rng(7).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(grey(x)), np.asarray(rgb(np.repeat(x, 3, axis=-1))), atol=1e-6)
    assert isinstance(grey.get_layer("grey_to_rgb"), ChannelRepeat)


def test_encoder_weights_from_path(tmp_path):
    base = build_backbone("mobilenetv2", (64, 64, 3), weights=None)
    path = tmp_path / "enc.weights.h5"
    base.save_weights(path)
    model = build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_weights=str(path))
    by_path = {w.path: np.asarray(w) for w in base.weights}
    enc = model.get_layer("mobilenetv2_encoder")
    assert len(enc.weights) > 100
    for w in enc.weights:
        np.testing.assert_array_equal(np.asarray(w), by_path[w.path])
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_weights=str(tmp_path / "missing.h5"))


def test_encoder_trainable_trains_the_deepest_blocks_with_batchnorm_frozen():
    model = build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_trainable=1)
    enc = model.get_layer("mobilenetv2_encoder")
    names = [layer.name for layer in enc.layers]
    cut = names.index("block_13_expand_relu")            # the last skip: the deepest block starts after it
    weighted = [layer for layer in enc.layers if layer.weights]
    assert any(layer.trainable for layer in weighted)
    for i, layer in enumerate(enc.layers):
        if not layer.weights:
            continue
        deep = i > cut
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (deep and not is_bn), layer.name
    fully = build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_trainable="all")
    fully_enc = fully.get_layer("mobilenetv2_encoder")
    assert len(fully_enc.trainable_weights) == len([w for w in fully_enc.weights if w.trainable])
    assert all(layer.trainable for layer in fully_enc.layers if layer.weights)   # BatchNorm included
    with pytest.raises(ValueError, match="encoder_trainable must be 0..5"):
        build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_trainable=9)


def test_earlier_encoder_options_map_onto_encoder_trainable_with_a_warning():
    def flags(model):
        return [layer.trainable for layer in model.get_layer("mobilenetv2_encoder").layers if layer.weights]

    for old, new in (({"unfreeze_blocks": 2}, 2), ({"encoder_freeze": False}, "all"),
                     ({"encoder_freeze": True, "unfreeze_blocks": 1, "train_encoder_bn": True}, 1)):
        with pytest.warns(FutureWarning, match=f"encoder_trainable={new!r}"):
            legacy = build_model("mobilenetv2_unet", input_shape=(64, 64, 1), **old)
        assert flags(legacy) == flags(build_model("mobilenetv2_unet", input_shape=(64, 64, 1),
                                                  encoder_trainable=new))
    with pytest.raises(ValueError, match="not with the older"):
        build_model("mobilenetv2_unet", input_shape=(64, 64, 1), encoder_trainable=1, unfreeze_blocks=1)


def test_encoder_blocks_of_unet_and_zoo_models():
    from cellseg_tf.models.freezing import encoder_blocks, set_encoder_trainable

    unet = build_model("unet", input_shape=(32, 32, 1), base_filters=4, depth=3)
    blocks, containers = encoder_blocks(unet)
    assert containers == [] and [{l.name.split("_")[0] for l in b} for b in blocks] == [{"enc0"}, {"enc1"}, {"enc2"}]
    set_encoder_trainable(unet, 2)
    trainable = {l.name for l in unet.layers if l.weights and l.trainable}
    assert {"enc1_a_conv", "enc2_b_conv", "bottleneck_a_conv", "dec0_a_conv"} <= trainable
    assert not {"enc0_a_conv", "enc1_a_bn", "enc2_b_bn"} & trainable
    set_encoder_trainable(unet, 0)
    assert not any(unet.get_layer(f"enc{i}_a_conv").trainable for i in range(3))
    assert unet.get_layer("head_logits").trainable                          # the decoder is never touched
    m3 = build_model("vgg16_attention_ia_unet", input_shape=(64, 64, 3))
    blocks, containers = encoder_blocks(m3)
    assert [c.name for c in containers] == ["vgg16_encoder"]
    assert [b[-1].name for b in blocks] == ["block1_pool", "block2_pool", "block3_pool", "block4_pool",
                                            "block5_pool"]
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 1, name="c")], name="plain")
    with pytest.raises(ValueError, match="'plain': no encoder"):
        set_encoder_trainable(plain, 1)


# ---------------------------------------------------------------------------------------------- custom layers
def test_attention_gate_output_in_unit_range_with_skip_shape():
    for stride in (1, 2):
        x_in = keras.Input((8, 8, 4))
        g_in = keras.Input((8 // stride, 8 // stride, 6))
        gated, psi = attention_gate(x_in, g_in, 3, "ag", gating_stride=stride)
        model = keras.Model([x_in, g_in], [gated, psi])
        x = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype("float32") * 5
        g = np.random.default_rng(3).normal(size=(2, 8 // stride, 8 // stride, 6)).astype("float32") * 5
        gated_v, psi_v = (np.asarray(t) for t in model([x, g]))
        assert psi_v.shape == (2, 8, 8, 1)
        assert psi_v.min() >= 0 and psi_v.max() <= 1 and psi_v.std() > 0
        np.testing.assert_allclose(gated_v, x * psi_v, rtol=1e-5, atol=1e-6)


def test_attention_maps_in_built_models_match_skip_shapes():
    model = build_model("attention_unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    assert model.get_layer("att0_psi").output.shape[1:] == (32, 32, 1)
    assert model.get_layer("att1_psi").output.shape[1:] == (16, 16, 1)
    m2 = build_model("vgg16_attention_unet", input_shape=(64, 64, 3))
    probe = keras.Model(m2.input, [m2.get_layer(f"att{i}_psi").output for i in range(4)])
    maps = probe(np.random.default_rng(4).random((1, 64, 64, 3)).astype("float32"))
    assert [tuple(m.shape[1:3]) for m in maps] == [(8, 8), (16, 16), (32, 32), (64, 64)]
    assert all(float(np.min(m)) >= 0 and float(np.max(m)) <= 1 for m in maps)
    m3 = build_model("vgg16_attention_ia_unet", input_shape=(64, 64, 3))
    probe = keras.Model(m3.input, [m3.get_layer(f"att{i}_psi").output for i in range(4)])
    maps = probe(np.random.default_rng(5).random((1, 64, 64, 3)).astype("float32"))
    # gates sit on the VGG16 pooling skips block4_pool ... block1_pool of a 64 px input
    assert [tuple(m.shape[1:3]) for m in maps] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    assert all(float(np.min(m)) >= 0 and float(np.max(m)) <= 1 for m in maps)


@pytest.mark.parametrize("scaled", [False, True])
def test_wsconv_standardises_kernel_per_filter(scaled):
    layer = WSConv2D(5, 3, padding="same", use_bias=False, scaled=scaled)
    x = np.random.default_rng(5).normal(size=(1, 6, 6, 2)).astype("float32")
    y = np.asarray(layer(x))
    k = np.asarray(layer.kernel)
    ks = (k - k.mean(axis=(0, 1, 2))) / np.sqrt(k.var(axis=(0, 1, 2)) + 1e-5)
    if scaled:
        ks = ks / np.sqrt(3 * 3 * 2)
    ref = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    ref.build(x.shape)
    ref.kernel.assign(ks)
    np.testing.assert_allclose(y, np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    std = np.asarray(layer.standardized_kernel())
    np.testing.assert_allclose(std.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(std.std(axis=(0, 1, 2)), 1 / np.sqrt(18) if scaled else 1, rtol=1e-3)
    clone = WSConv2D.from_config(layer.get_config())
    assert (clone.epsilon, clone.scaled) == (layer.epsilon, scaled)


@pytest.mark.parametrize("mode,module", [("caffe", "vgg16"), ("torch", "densenet"), ("tf", "mobilenet_v2")])
def test_imagenet_preprocess_matches_keras_applications(mode, module):
    x = np.random.default_rng(6).random((1, 4, 4, 3)).astype("float32")
    ours = np.asarray(ImageNetPreprocess(mode)(x))
    ref = getattr(keras.applications, module).preprocess_input(x * 255.0)
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ImageNetPreprocess("raw255")(x)), x * 255.0, rtol=1e-6)


def test_efficientnet_file_weights_get_the_rescaling_keras_only_adds_for_imagenet(tmp_path):
    """keras.applications.EfficientNet stores ImageNet std (not variance) in its Normalization layer and adds a
    1/sqrt(std) Rescaling only for weights="imagenet"; with a weights file our preprocessing compensates."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    u = np.random.default_rng(7).random((1, 4, 4, 3)).astype("float32")
    as_loaded = keras.layers.Normalization(axis=-1, mean=mean, variance=std)  # what the weights file holds
    fixed = np.asarray(as_loaded(np.asarray(ImageNetPreprocess("raw255_std_fix")(u)) / 255.0))
    np.testing.assert_allclose(fixed, (u - mean) / std, rtol=1e-4, atol=1e-4)  # = what "imagenet" computes
    base = build_backbone("efficientnetb0", (32, 32, 3), weights=None)
    path = tmp_path / "effnet.weights.h5"
    base.save_weights(path)
    by_file = build_model("efficientnetb0_unet", input_shape=(32, 32, 1), encoder_weights=str(path))
    assert by_file.get_layer("efficientnetb0_preprocess").mode == "raw255_std_fix"
    random_init = build_model("efficientnetb0_unet", input_shape=(32, 32, 1), encoder_weights=None)
    assert random_init.get_layer("efficientnetb0_preprocess").mode == "raw255"


def test_resize_like_matches_reference_size_and_keeps_constants():
    x = np.full((1, 5, 7, 2), 0.25, dtype="float32")
    ref = np.zeros((1, 11, 13, 1), dtype="float32")
    out = np.asarray(ResizeLike()([x, ref]))
    assert out.shape == (1, 11, 13, 2)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    assert np.asarray(ChannelRepeat(3)(np.ones((1, 2, 2, 1), "float32"))).shape == (1, 2, 2, 3)


# ------------------------------------------------------------------------------- output head / target kind
@pytest.mark.parametrize("name", available_models())      # every registered model, those added later included
def test_two_channel_head_round_trips_with_its_target_kind(name, tmp_path):
    from cellseg_tf.models import TargetHead, target_kind

    kind = "contour" if name.startswith(("vgg16", "resnet")) else "distance"
    options = {"target": kind} if kind == "contour" else {"out_channels": 2}   # out_channels=2 alone: distance
    model = _build(name, **options)
    x = _batch(name, seed=2)
    y = np.asarray(model(x, training=False))
    assert y.shape == x.shape[:3] + (2,) and y.dtype == np.float32 and ((y >= 0) & (y <= 1)).all()
    assert isinstance(model.layers[-1], TargetHead) and target_kind(model) == kind
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert target_kind(loaded) == kind and loaded.output.shape[-1] == 2
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), y)


def test_target_head_options_dtype_and_old_checkpoints():
    from cellseg_tf.models import target_kind
    from cellseg_tf.models.heads import TargetHead, head_kind

    assert [head_kind(), head_kind(1), head_kind(2), head_kind(None, "contour"), head_kind(2, "distance")] == \
        ["binary", "binary", "distance", "contour", "distance"]
    with pytest.raises(ValueError, match="out_channels=1 does not fit target 'distance'"):
        head_kind(1, "distance")
    with pytest.raises(ValueError, match="out_channels must be 1"):
        head_kind(3)
    assert target_kind(_build("unet")) == "binary" and _build("unet").output.shape[-1] == 1
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _build("unet", target="distance")
    assert model.get_layer("head_logits").compute_dtype == "float16"
    assert model.output.dtype == "float32" and model.layers[-1].compute_dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")
    inp = keras.Input((8, 8, 1))                          # a checkpoint from before TargetHead: sigmoid Activation
    old = keras.Model(inp, keras.layers.Activation("sigmoid")(keras.layers.Conv2D(1, 1)(inp)))
    assert target_kind(old) == "binary"
    with pytest.raises(ValueError, match="needs 2 input channel"):
        TargetHead("contour")(keras.Input((8, 8, 1)))
