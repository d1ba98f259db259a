"""Learning-rate schedules and optimisers: values at given steps, options, registry errors, serialisation."""
from __future__ import annotations

import keras
import pytest

from cellseg_tf.training.callbacks import ResumableReduceLROnPlateau
from cellseg_tf.training.schedules import (available_optimizers, available_schedules, build_optimizer, build_schedule,
                                  learning_rate_at)


def test_constant_schedule():
    s = build_schedule("constant", 3e-4, steps_per_epoch=10)
    assert s.callbacks == [] and learning_rate_at(s.learning_rate, 0) == learning_rate_at(s.learning_rate, 10**6)


def test_exponential_staircase_published_defaults():
    lr = build_schedule("exponential", 1e-4, steps_per_epoch=100).learning_rate
    expected = {0: 1e-4, 8999: 1e-4, 9000: 9e-5, 17999: 9e-5, 18000: 8.1e-5, 90000: 1e-4 * 0.9 ** 10}
    for step, value in expected.items():
        assert learning_rate_at(lr, step) == pytest.approx(value, rel=1e-5), step


def test_exponential_decay_epochs_and_smooth_option():
    lr = build_schedule("exponential", 1.0, steps_per_epoch=5, decay_epochs=2, decay_rate=0.5).learning_rate
    assert [round(learning_rate_at(lr, s), 6) for s in (0, 9, 10, 20)] == [1.0, 1.0, 0.5, 0.25]
    smooth = build_schedule("exponential", 1.0, 1, decay_steps=10, decay_rate=0.5, staircase=False).learning_rate
    assert learning_rate_at(smooth, 5) == pytest.approx(0.5 ** 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="not both"):
        build_schedule("exponential", 1.0, 5, decay_steps=3, decay_epochs=2)


def test_schedule_survives_keras_serialisation():
    lr = build_schedule("exponential", 1e-3, 1, decay_steps=7, decay_rate=0.8).learning_rate
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert learning_rate_at(restored, 14) == pytest.approx(1e-3 * 0.64, rel=1e-5)
    opt = keras.optimizers.deserialize(keras.optimizers.serialize(build_optimizer("adam", lr)))
    assert float(opt.learning_rate) == pytest.approx(1e-3)  # evaluated at iteration 0


def test_plateau_schedule_brings_its_callback():
    s = build_schedule("plateau", 1e-3, 10, factor=0.2, patience=4)
    assert s.learning_rate == pytest.approx(1e-3)
    (cb,) = s.callbacks
    assert isinstance(cb, ResumableReduceLROnPlateau) and cb.factor == pytest.approx(0.2) and cb.patience == 4
    assert cb.monitor == "val_dice"


def test_registry_errors_name_the_choices():
    assert {"constant", "exponential", "plateau"} <= set(available_schedules())
    with pytest.raises(KeyError, match="constant"):
        build_schedule("cosine-ish", 1e-3)
    with pytest.raises(ValueError, match="unknown option"):
        build_schedule("constant", 1e-3, 1, decay_rate=0.5)
    with pytest.raises(KeyError, match="adam"):
        build_optimizer("lion", 1e-3)


def test_optimizers():
    assert {"adam", "adamw", "sgd"} <= set(available_optimizers())
    adam = build_optimizer("adam", 1e-4)
    assert isinstance(adam, keras.optimizers.Adam) and float(adam.learning_rate) == pytest.approx(1e-4)
    sgd = build_optimizer("sgd", 1e-2)
    assert sgd.momentum == pytest.approx(0.9)
    with pytest.raises(ValueError, match="bad option"):
        build_optimizer("adam", 1e-3, nonsense=1)


def test_cosine_schedule_anneals_over_steps_or_time_whichever_is_first():
    from cellseg_tf.training.schedules import RunPlan

    cb = build_schedule("cosine", 1e-3, steps_per_epoch=10, plan=RunPlan(total_steps=100)).callbacks[0]
    assert cb.rate(0, 0.0) == pytest.approx(1e-3)
    assert cb.rate(50, 0.0) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))
    assert cb.rate(100, 0.0) == pytest.approx(1e-3 * 0.02)
    assert cb.rate(500, 0.0) == pytest.approx(1e-3 * 0.02)  # clamped after the end
    timed = build_schedule("cosine", 1e-3, 10, plan=RunPlan(total_steps=100, time_budget_s=60.0)).callbacks[0]
    assert timed.rate(10, 30.0) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))  # time is further along than steps
    assert timed.rate(75, 30.0) == pytest.approx(cb.rate(75, 0.0))              # steps are further along
    warm = build_schedule("cosine", 1.0, 10, warmup_steps=4, plan=RunPlan(total_steps=1000)).callbacks[0]
    assert warm.rate(0, 0.0) == pytest.approx(0.25, rel=1e-3) and warm.rate(3, 0.0) == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="alpha"):
        build_schedule("cosine", 1e-3, 10, alpha=2.0)
    held = build_schedule("cosine", 1.0, 10, hold=0.6, plan=RunPlan(total_steps=100)).callbacks[0]
    assert held.rate(0, 0.0) == held.rate(60, 0.0) == pytest.approx(1.0)      # flat for the first 60 %
    assert held.rate(80, 0.0) == pytest.approx(0.02 + 0.98 * 0.5)              # half-way through the decay
    assert held.rate(100, 0.0) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="hold"):
        build_schedule("cosine", 1e-3, 10, hold=1.0)


def test_cosine_schedule_sets_the_optimizer_rate_during_fit():
    import keras
    import numpy as np

    from cellseg_tf.training.schedules import RunPlan

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    sched = build_schedule("cosine", 0.1, steps_per_epoch=4, plan=RunPlan(total_steps=8))
    model.compile(keras.optimizers.SGD(sched.learning_rate), "mse")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))))
    x, y = np.ones((32, 4), "float32"), np.zeros((32, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=8, callbacks=sched.callbacks + [record], verbose=0)
    expected = [sched.callbacks[0].rate(i, 0.0) for i in range(8)]
    assert np.allclose(seen, expected, rtol=1e-5) and seen[0] > seen[-1]
