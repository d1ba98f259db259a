"""Strategy selection: auto falls back to the default strategy on a CPU; TPU detection and the TPU-VM resolver."""
from __future__ import annotations

import pytest

from cellseg_tf import distribute
from cellseg_tf.training.distribute import TPU_ENV_VARS, select_strategy, strategy_name, tpu_available


def test_auto_and_default_on_a_cpu_machine(monkeypatch):
    for var in TPU_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distribute, "tpu_available", lambda: False)
    assert strategy_name(select_strategy("auto")) == "default"
    assert strategy_name(select_strategy("default")) == "default"
    assert strategy_name(select_strategy("mirrored")) == "MirroredStrategy"
    with pytest.raises(ValueError, match="unknown strategy"):
        select_strategy("horovod")


def test_tpu_detection_from_the_environment(monkeypatch):
    for var in TPU_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    baseline = tpu_available()  # whatever this machine's /dev says (False on CI)
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert tpu_available()
    monkeypatch.delenv("TPU_NAME")
    assert tpu_available() == baseline


def test_tpu_vm_resolver_falls_back_to_local_chips(monkeypatch):
    import tensorflow as tf

    calls = []

    class FakeResolver:
        def __init__(self, tpu=None):
            calls.append(tpu)
            if tpu is None:
                raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    assert isinstance(distribute._tpu_resolver(), FakeResolver)
    assert calls == [None, "local"]


def test_explicit_tpu_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(distribute, "_tpu_strategy", lambda: (_ for _ in ()).throw(ValueError("no TPU found")))
    with pytest.raises(RuntimeError, match="strategy 'tpu': no TPU reachable"):
        select_strategy("tpu")
    monkeypatch.setattr(distribute, "tpu_available", lambda: True)  # auto: a failing TPU falls back, no error
    assert strategy_name(select_strategy("auto")) == "default"
