"""Training metrics: pooled TP/FP/FN across batches, agreement with Keras built-ins, empty-mask convention,
thresholds, sample weights, float16 inputs, and a `.keras` round trip of a model compiled with them."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cellseg_tf.training.metrics import DiceMetric, IoUMetric, PrecisionMetric, RecallMetric, default_metrics  # noqa: E402


def _batches():
    rng = np.random.default_rng(0)
    t1 = np.zeros((2, 8, 8, 1), np.float32)
    t1[:, :1] = 1                                       # sparse foreground batch
    t2 = (rng.random((2, 8, 8, 1)) > 0.3).astype(np.float32)  # dense foreground batch
    p1, p2 = rng.random(t1.shape).astype(np.float32), rng.random(t2.shape).astype(np.float32)
    return [(t1, p1), (t2, p2)]


def _counts(t, p, thr=0.5):
    t, p = t > 0.5, p > thr
    return np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)


def _ref(kind, tp, fp, fn):
    num, den = {"dice": (2 * tp, 2 * tp + fp + fn), "iou": (tp, tp + fp + fn),
                "precision": (tp, tp + fp), "recall": (tp, tp + fn)}[kind]
    return num / den if den else 1.0


def test_default_metrics_names_and_threshold():
    ms = default_metrics(0.3)
    assert [m.name for m in ms] == ["dice", "iou", "precision", "recall"]
    assert all(m.threshold == 0.3 for m in ms)


@pytest.mark.parametrize("cls,kind", [(DiceMetric, "dice"), (IoUMetric, "iou"), (PrecisionMetric, "precision"),
                                      (RecallMetric, "recall")])
def test_accumulates_globally_not_mean_of_batches(cls, kind):
    m = cls()
    batches = _batches()
    per_batch = []
    for t, p in batches:
        m.update_state(t, p)
        per_batch.append(_ref(kind, *_counts(t, p)))
    pooled = _ref(kind, *np.sum([_counts(t, p) for t, p in batches], axis=0))
    assert float(m.result()) == pytest.approx(pooled, rel=1e-6)
    if kind in ("dice", "iou", "recall"):  # these differ between pooled and batch-mean on this data
        assert abs(pooled - np.mean(per_batch)) > 1e-3
    m.reset_state()
    assert float(m.result()) == 1.0  # nothing seen: empty convention


def test_agree_with_keras_builtins():
    ours = [IoUMetric(), PrecisionMetric(), RecallMetric(), DiceMetric()]
    theirs = [keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5), keras.metrics.Precision(thresholds=0.5),
              keras.metrics.Recall(thresholds=0.5),
              keras.metrics.F1Score(average="micro", threshold=0.5)]
    for t, p in _batches():
        for a, b in zip(ours, theirs):
            a.update_state(t, p)
            if isinstance(b, keras.metrics.F1Score):
                b.update_state(t.reshape(-1, 1), p.reshape(-1, 1))
            else:
                b.update_state(t, p)
    for a, b in zip(ours, theirs):
        assert float(a.result()) == pytest.approx(float(np.squeeze(b.result())), rel=1e-5), a.name


def test_empty_mask_conventions():
    empty = np.zeros((1, 4, 4, 1), np.float32)
    full = np.ones_like(empty)
    both_empty = [float(_upd(cls(), empty, empty).result()) for cls in (DiceMetric, IoUMetric, PrecisionMetric,
                                                                         RecallMetric)]
    assert both_empty == [1.0, 1.0, 1.0, 1.0]
    # all false positives: precision 0, recall 1 (nothing to miss), dice/iou 0
    fps = [float(_upd(cls(), empty, full).result()) for cls in (DiceMetric, IoUMetric, PrecisionMetric, RecallMetric)]
    assert fps == [0.0, 0.0, 0.0, 1.0]
    # all missed: precision 1 (no false positive made), recall 0
    fns = [float(_upd(cls(), full, empty).result()) for cls in (DiceMetric, IoUMetric, PrecisionMetric, RecallMetric)]
    assert fns == [0.0, 0.0, 1.0, 0.0]


def _upd(m, t, p, **kw):
    m.update_state(t, p, **kw)
    return m


def test_threshold_sample_weight_and_float16():
    t = np.zeros((2, 2, 2, 1), np.float32)
    t[:, 0] = 1
    p = np.full_like(t, 0.4)                              # below 0.5, above 0.3
    assert float(_upd(DiceMetric(), t, p).result()) == 0.0
    assert float(_upd(DiceMetric(threshold=0.3), t, p).result()) == pytest.approx(2 * 4 / (2 * 4 + 4))
    # weight 0 on sample 1 (which is all wrong) leaves only the perfect sample 0
    p2 = t.copy()
    p2[1] = 1 - t[1]
    assert float(_upd(DiceMetric(), t, p2, sample_weight=np.array([1.0, 0.0])).result()) == 1.0
    assert float(_upd(DiceMetric(), t, p2).result()) == pytest.approx(0.5)
    m = _upd(IoUMetric(), t.astype(np.float16), p2.astype(np.float16))
    assert float(m.result()) == pytest.approx(1 / 3) and m.result().dtype == "float32"


def test_keras_round_trip_and_evaluate(tmp_path):
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=default_metrics(0.4))
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    before = model.evaluate(x, y, return_dict=True, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    after = loaded.evaluate(x, y, return_dict=True, verbose=0)
    assert {"dice", "iou", "precision", "recall"} <= set(after)
    for k in ("dice", "iou", "precision", "recall"):
        assert after[k] == pytest.approx(before[k], rel=1e-6)
    cfg = DiceMetric(threshold=0.4).get_config()
    assert DiceMetric.from_config(cfg).threshold == 0.4 and cfg["name"] == "dice"


def test_metrics_score_only_the_foreground_channel_of_instance_targets():
    rng = np.random.default_rng(4)
    t = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    p = rng.random((2, 8, 8, 1)).astype(np.float32)
    aux_t, aux_p = rng.random(t.shape).astype(np.float32), rng.random(t.shape).astype(np.float32)
    for metric in default_metrics():
        one, two = type(metric)(), type(metric)()
        one.update_state(t, p)
        two.update_state(np.concatenate([t, aux_t], -1), np.concatenate([p, aux_p], -1))
        assert float(two.result()) == pytest.approx(float(one.result()))
