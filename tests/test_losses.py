"""Every registered loss against an independent numpy reference, its extreme values, gradients, float16 inputs,
parameter round trips and a `.keras` save/load of a model compiled with it."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cellseg_tf import losses as L  # noqa: E402

EPS = 1e-7
ALL = L.available_losses()


# ------------------------------------------------------------------ numpy references (written from the formulas)

def _clip(p):
    return np.clip(p.astype(np.float64), EPS, 1 - EPS)


def np_bce(t, p, pos_weight=1.0):
    p = _clip(p)
    return -np.mean(pos_weight * t * np.log(p) + (1 - t) * np.log(1 - p), axis=(1, 2, 3))


def np_dice(t, p, smooth=1.0):
    p = _clip(p)
    inter = (t * p).sum(axis=(1, 2, 3))
    return 1 - (2 * inter + smooth) / (t.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3)) + smooth)


def np_focal(t, p, alpha=0.25, gamma=2.0):
    p = _clip(p)
    pt = np.where(t > 0.5, p, 1 - p)
    w = np.where(t > 0.5, alpha, 1 - alpha)
    return np.mean(-w * (1 - pt) ** gamma * np.log(pt), axis=(1, 2, 3))


def np_edges(x):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    lap = xp[:, :-2, 1:-1] + xp[:, 2:, 1:-1] + xp[:, 1:-1, :-2] + xp[:, 1:-1, 2:] - 4 * x
    return np.abs(lap) / 4


def np_boundary(t, p):
    et, ep = np_edges(t.astype(np.float64)), np_edges(_clip(p))
    return ((ep - et) ** 2).sum(axis=(1, 2, 3)) / ((ep ** 2).sum(axis=(1, 2, 3)) + (et ** 2).sum(axis=(1, 2, 3)) + EPS)


def np_ti(t, p, alpha, beta, smooth):
    p = _clip(p)
    tp = (t * p).sum(axis=(1, 2, 3))
    fp = ((1 - t) * p).sum(axis=(1, 2, 3))
    fn = (t * (1 - p)).sum(axis=(1, 2, 3))
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def np_tversky(t, p, alpha=0.3, beta=0.7, smooth=1.0):
    return 1 - np_ti(t, p, alpha, beta, smooth)


def np_focal_tversky(t, p, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0):
    return np.maximum(1 - np_ti(t, p, alpha, beta, smooth), EPS) ** gamma


def np_topk(t, p, k_fraction=0.1, pos_weight=1.0):
    q = _clip(p)
    pix = -(pos_weight * t * np.log(q) + (1 - t) * np.log(1 - q)).reshape(len(t), -1)
    k = max(1, int(np.ceil(k_fraction * pix.shape[1] - 1e-9)))
    return np.sort(pix, axis=1)[:, ::-1][:, :k].mean(axis=1)


def np_dynamic(t, p, small=0.0625, background=0.0, threshold=0.5, alpha=0.7, beta=0.3, gamma=0.75, smooth=1.0,
               reference="prediction"):
    frac = ((p if reference == "prediction" else t) > threshold).mean(axis=(1, 2, 3))
    b, tv, ftv = np_bce(t, p), np_tversky(t, p, alpha, beta, smooth), np_focal_tversky(t, p, alpha, beta, gamma, smooth)
    return np.where(frac <= background, b, np.where(frac < small, b + tv, tv + ftv))


REFERENCES = {
    "bce": lambda t, p: np_bce(t, p),
    "weighted_bce": lambda t, p: np_bce(t, p, 10.0),
    "dice": np_dice,
    "bce_dice": lambda t, p: np_bce(t, p) + np_dice(t, p),
    "focal": np_focal,
    "boundary": np_boundary,
    "focal_dice_boundary": lambda t, p: 0.3 * np_focal(t, p) + 0.6 * np_dice(t, p) + 0.1 * np_boundary(t, p),
    "tversky": np_tversky,
    "focal_tversky": np_focal_tversky,
    "wbce_tversky": lambda t, p: np_bce(t, p, 10.0) + np_tversky(t, p),
    "dynamic_threshold": np_dynamic,
    "topk_bce_dice": lambda t, p: np_topk(t, p) + np_dice(t, p),
}


def _batch(seed=0, size=16):
    """Truth with one empty, one sparse, one dense sample; smooth-ish random probabilities."""
    rng = np.random.default_rng(seed)
    t = np.zeros((3, size, size, 1), np.float32)
    t[1, 3:7, 4:9] = 1
    t[2] = rng.random((size, size, 1)) > 0.4
    p = rng.random((3, size, size, 1)).astype(np.float32)
    p[1] *= 0.08  # predicted foreground fraction 0 -> background branch of dynamic_threshold
    return t, p


def _value(name, t, p, **params):
    return np.asarray(L.get_loss(name, **params).call(t, p))


def test_registry_lists_every_documented_loss():
    expected = {"bce", "weighted_bce", "dice", "bce_dice", "focal", "boundary", "focal_dice_boundary", "tversky",
                "focal_tversky", "wbce_tversky", "dynamic_threshold", "topk_bce_dice"}
    assert expected == set(ALL) == set(REFERENCES)


@pytest.mark.parametrize("name", ALL)
def test_matches_numpy_reference_per_sample(name):
    for seed in (0, 1):
        t, p = _batch(seed)
        got = _value(name, t, p)
        assert got.shape == (3,) and got.dtype == np.float32
        np.testing.assert_allclose(got, REFERENCES[name](t, p), rtol=2e-4, atol=1e-6)
    # the reduced Keras call is the batch mean of the per-sample values
    loss = L.get_loss(name)
    assert float(loss(t, p)) == pytest.approx(float(np.mean(loss.call(t, p))), rel=1e-5)


NOT_MAX_AT_INVERSION = {
    "boundary": "edge maps are blind to inside/outside: an inverted mask has the same edges",
    "dynamic_threshold": "a different branch (BCE-heavy) applies to a mostly-empty prediction",
}


@pytest.mark.parametrize("name", ALL)
def test_perfect_is_minimum_and_inverted_is_maximum(name):
    t, p = _batch(3)
    t[0, 2:5, 2:5] = 1  # no empty sample here: every branch sees both classes
    perfect = _value(name, t, t)
    random = _value(name, t, p)
    assert np.all(perfect < 1e-4), perfect
    assert np.all(random > perfect)
    if name not in NOT_MAX_AT_INVERSION:
        inverted = _value(name, t, 1 - t)
        for seed in range(3):
            q = np.random.default_rng(seed).random(t.shape).astype(np.float32)
            assert np.all(inverted >= _value(name, t, q) - 1e-6)


def test_boundary_is_inversion_invariant_but_composite_is_not():
    t, _ = _batch(4)
    t[0, 5:9, 5:9] = 1
    np.testing.assert_allclose(_value("boundary", t, 1 - t), 0.0, atol=1e-6)
    assert np.all(_value("focal_dice_boundary", t, 1 - t) > 0.5)
    shifted = np.roll(t, 2, axis=2)
    assert np.all(_value("boundary", t, shifted)[:2] > 0.3)  # the two structured samples


@pytest.mark.parametrize("name", ALL)
def test_empty_masks(name):
    empty = np.zeros((2, 16, 16, 1), np.float32)
    full = np.ones_like(empty)
    assert np.all(_value(name, empty, empty) < 1e-3)          # nothing to find, nothing predicted: (near) zero
    if name != "boundary":                                     # uniform maps have no edges at all
        assert np.all(_value(name, empty, full) > 0.2)         # all false positives: clearly penalised
        assert np.all(_value(name, full, empty) > 0.2)         # all missed
    assert np.all(np.isfinite(_value(name, full, full)))


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite_and_informative(name):
    t, p = _batch(5)
    for target, start in ((t, p), (t, t), (np.zeros_like(t), np.zeros_like(t))):
        var = tf.Variable(start)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(L.get_loss(name).call(tf.constant(target), var))
        grad = tape.gradient(value, var).numpy()
        assert np.all(np.isfinite(grad)), name
    var = tf.Variable(p)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(L.get_loss(name).call(tf.constant(t), var))
    assert np.abs(tape.gradient(value, var).numpy()).max() > 0


@pytest.mark.parametrize("name", ALL)
def test_float16_inputs_are_computed_in_float32(name):
    t, p = _batch(6, size=32)
    p16 = p.astype(np.float16)
    got = L.get_loss(name).call(t.astype(np.float16), p16)
    assert got.dtype == "float32"
    # same value as float32 arithmetic on the same (rounded) inputs: the cast happens before any reduction
    np.testing.assert_allclose(np.asarray(got), _value(name, t, p16.astype(np.float32)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got), _value(name, t, p), rtol=2e-2, atol=2e-3)


def test_loss_object_returns_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    t, p = _batch(7)
    value = L.get_loss("focal_dice_boundary")(t.astype(np.float16), p.astype(np.float16))
    assert value.dtype == "float32"


def test_dynamic_threshold_branches():
    t = np.zeros((3, 16, 16, 1), np.float32)
    t[:, 4:12, 4:12] = 1                        # 25 % foreground in truth
    p = np.full_like(t, 0.1)
    p[1, 0:2, 0:4] = 0.9                        # 8 px = 3.1 % predicted -> small ROI
    p[2, 4:12, 4:12] = 0.8                      # 25 % predicted -> large ROI
    got = _value("dynamic_threshold", t, p)
    b, tv = np_bce(t, p), np_tversky(t, p, 0.7, 0.3)
    ftv = np_focal_tversky(t, p, 0.7, 0.3)
    np.testing.assert_allclose(got, [b[0], b[1] + tv[1], tv[2] + ftv[2]], rtol=1e-4)
    # classified by the truth instead: all three are large-ROI patches
    by_truth = _value("dynamic_threshold", t, p, reference="truth")
    np.testing.assert_allclose(by_truth, tv + ftv, rtol=1e-4)
    with pytest.raises(ValueError, match="reference"):
        L.get_loss("dynamic_threshold", reference="mask")


def test_topk_selects_the_hardest_pixels():
    t = np.zeros((1, 4, 4, 1), np.float32)
    p = np.full_like(t, 0.01)
    p[0, 0, :4, 0] = [0.9, 0.8, 0.7, 0.6]          # four hard background pixels
    got = np.asarray(L.topk_bce(t, p, k_fraction=0.25))
    np.testing.assert_allclose(got, [-np.mean(np.log(1 - np.array([0.9, 0.8, 0.7, 0.6])))], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(L.topk_bce(t, p, k_fraction=1.0)), np_bce(t, p), rtol=1e-5)
    with pytest.raises(ValueError, match="k_fraction"):
        L.get_loss("topk_bce_dice", k_fraction=0.0)


def test_topk_with_unknown_spatial_size_in_a_graph():
    fn = tf.function(lambda t, p: L.topk_bce(t, p, 0.25),
                     input_signature=[tf.TensorSpec((None, None, None, 1))] * 2)
    t, p = _batch(8)
    np.testing.assert_allclose(fn(t, p).numpy(), np_topk(t, p, 0.25), rtol=1e-5)


def test_dice_and_tversky_agree_with_keras_builtins_without_smoothing():
    t, p = _batch(9)
    t, p = t[1:], p[1:]  # keras' unsmoothed versions are undefined on empty samples
    kd = keras.losses.dice(t, p, axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(L.soft_dice(t, p, smooth=0.0)), np.asarray(kd), rtol=1e-4)
    # α = β: symmetric, so independent of keras' α/β convention (swapped in Keras <= 3.15, keras-team/keras#23333)
    kt = keras.losses.tversky(t, p, alpha=0.5, beta=0.5, axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(L.tversky(t, p, 0.5, 0.5, smooth=0.0)), np.asarray(kt), rtol=1e-4)


def test_tversky_alpha_weights_false_positives():
    t = np.zeros((1, 4, 4, 1), np.float32)
    t[0, :2] = 1                                  # 8 positives
    p = t.copy()
    p[0, 2, :2] = 1                               # 2 false positives, no miss
    fp_heavy = _value("tversky", t, p, alpha=1.0, beta=0.0, smooth=0.0)
    fn_heavy = _value("tversky", t, p, alpha=0.0, beta=1.0, smooth=0.0)
    np.testing.assert_allclose(fp_heavy, 1 - 8 / 10, rtol=1e-4)
    np.testing.assert_allclose(fn_heavy, 0.0, atol=1e-5)


def test_registry_errors_and_config_round_trip():
    with pytest.raises(KeyError, match="available"):
        L.get_loss("nope")
    with pytest.raises(TypeError, match="accepted"):
        L.get_loss("dice", alpha=0.5)
    loss = L.get_loss("focal_dice_boundary", boundary_weight=0.2, gamma=1.5)
    again = type(loss).from_config(loss.get_config())
    assert again.params == loss.params and again.params["boundary_weight"] == 0.2
    assert keras.losses.deserialize(keras.losses.serialize(loss)).params == loss.params


def test_keras_file_round_trip_with_every_loss(tmp_path):
    """One tiny compiled model per loss, saved and reloaded WITHOUT custom_objects (compile=True)."""
    params = {"tversky": {"alpha": 0.2, "beta": 0.8}, "dynamic_threshold": {"reference": "truth"},
              "topk_bce_dice": {"k_fraction": 0.25}, "focal_dice_boundary": {"boundary_weight": 0.2}}
    t, p = _batch(10, size=8)
    inp = keras.Input((None, None, 1))            # unknown H, W: the graph-mode path of every loss is traced
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))
    for name in ALL:
        loss = L.get_loss(name, **params.get(name, {}))
        model.compile(optimizer="sgd", loss=loss)
        assert np.isfinite(model.train_on_batch(p, t))  # one compiled (tf.function) training step
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded.loss) is type(loss), name
        assert loaded.loss.params == loss.params, name
        np.testing.assert_allclose(float(loaded.loss(t, p)), float(loss(t, p)), rtol=1e-6)


# ------------------------------------------------------------------------- instance targets (2 channels)

def _two_channel(seed=0, size=16):
    """Foreground truth + a soft distance-like second channel, and random 2-channel probabilities."""
    t, p = _batch(seed, size)
    rng = np.random.default_rng(seed + 10)
    aux_t = (t * rng.random(t.shape)).astype(np.float32)
    aux_p = rng.random(t.shape).astype(np.float32)
    return np.concatenate([t, aux_t], -1), np.concatenate([p, aux_p], -1)


@pytest.mark.parametrize("base,aux,weight", [("bce_dice", "bce", 1.0), ("tversky", "mse", 0.5),
                                             ("dice", "bce", 0.0)])
def test_instance_target_loss_is_base_on_channel0_plus_weighted_aux(base, aux, weight):
    t, p = _two_channel(1)
    loss = L.InstanceTargetLoss(kind="distance", base=base, aux=aux, aux_weight=weight)

    def reference(t, p):
        ch1 = (np_bce(t[..., 1:], p[..., 1:]) if aux == "bce"
               else np.mean((_clip(p[..., 1:]) - t[..., 1:]) ** 2, axis=(1, 2, 3)))
        return REFERENCES[base](t[..., :1], p[..., :1]) + weight * ch1

    got = np.asarray(loss.call(t, p))
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, reference(t, p), rtol=2e-4, atol=1e-6)
    half = np.asarray(loss.call(t.astype(np.float16), p.astype(np.float16)))       # mixed-precision inputs
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, reference(t, p.astype(np.float16).astype(np.float32)), rtol=2e-4, atol=1e-5)


def test_instance_target_loss_trains_both_channels_and_is_not_a_pixel_loss():
    assert "instance_target" not in ALL                     # chosen by the target, never by --loss
    t, p = _two_channel(2)
    logits = tf.Variable(np.log(p / (1 - p)))
    loss = L.loss_for_target("contour", "bce_dice", {"pos_weight": 2.0}, aux_weight=0.7)
    assert isinstance(loss, L.InstanceTargetLoss) and loss.params["base_options"] == {"pos_weight": 2.0}
    with tf.GradientTape() as tape:
        value = loss(t, tf.sigmoid(logits))
    g = tape.gradient(value, logits).numpy()
    assert np.isfinite(g).all() and np.abs(g[..., 0]).sum() > 0 and np.abs(g[..., 1]).sum() > 0
    assert type(L.loss_for_target("binary", "tversky", {"alpha": 0.2})) is L.TverskyLoss
    with pytest.raises(ValueError, match="kind"):
        L.InstanceTargetLoss(kind="binary")
    with pytest.raises(TypeError, match="unknown parameter"):
        L.InstanceTargetLoss(kind="distance", base="tversky", base_options={"gamma": 2})


def test_instance_target_loss_keras_file_round_trip(tmp_path):
    t, p = _two_channel(3, size=8)
    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, activation="sigmoid")(inp))
    loss = L.loss_for_target("distance", "topk_bce_dice", {"k_fraction": 0.25}, aux_weight=0.3)
    model.compile(optimizer="sgd", loss=loss)
    assert np.isfinite(model.train_on_batch(p[..., :1], t))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded.loss) is L.InstanceTargetLoss and loaded.loss.params == loss.params
    np.testing.assert_allclose(float(loaded.loss(t, p)), float(loss(t, p)), rtol=1e-6)
