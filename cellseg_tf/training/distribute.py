"""Pick the tf.distribute strategy a training run builds and fits its model under.

auto: TPUStrategy when a TPU is attached (Colab TPU runtime / TPU VM), MirroredStrategy when TensorFlow sees more
than one GPU, otherwise the default (single-device) strategy. `batch_size` in TrainConfig is the GLOBAL batch: each
of N replicas gets batch_size / N patches per step.

Several machines: start the same command on every worker with TF_CONFIG set, and strategy=multiworker
(MultiWorkerMirroredStrategy); see docs/TRAINING.md. The input pipeline uses tf.numpy_function (albumentations), so
it runs on the host CPU: fine for GPUs and TPU VMs, not for the legacy remote "TPU Node" runtime.
"""
from __future__ import annotations

import os
from pathlib import Path

_TPU_CACHE: dict = {}


TPU_ENV_VARS = ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES")


def tpu_available() -> bool:
    """Cheap check for an attached TPU without touching the TPU system: TPU env vars, /dev/accel* (TPU VM v2-v4),
    or /dev/vfio/<n> with libtpu installed (v5e/v6e TPU VMs, e.g. Colab's current TPU runtime)."""
    import importlib.util

    if any(os.environ.get(v) for v in TPU_ENV_VARS) or any(Path("/dev").glob("accel[0-9]*")):
        return True
    return any(Path("/dev/vfio").glob("[0-9]*")) and importlib.util.find_spec("libtpu") is not None


def _tpu_resolver():
    """A TPUClusterResolver: from TPU_NAME / COLAB_TPU_ADDR (remote TPU node) or, on a TPU VM, the local chips."""
    import tensorflow as tf

    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except ValueError:  # "Please provide a TPU Name": a TPU VM has no name, its chips are local
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")


def _tpu_strategy():
    import tensorflow as tf

    if "strategy" not in _TPU_CACHE:  # the TPU system may be initialised once per process
        resolver = _tpu_resolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        _TPU_CACHE["strategy"] = tf.distribute.TPUStrategy(resolver)
    return _TPU_CACHE["strategy"]


def select_strategy(name: str = "auto"):
    """'auto' | 'default' | 'mirrored' | 'tpu' | 'multiworker' -> a tf.distribute.Strategy.

    'tpu' raises RuntimeError when no TPU can be reached; 'auto' falls back to GPUs/default instead.
    """
    import tensorflow as tf

    if name not in ("auto", "default", "mirrored", "tpu", "multiworker"):
        raise ValueError(f"unknown strategy {name!r}; use auto, default, mirrored, tpu or multiworker")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu" or (name == "auto" and tpu_available()):
        try:
            return _tpu_strategy()
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            if name == "tpu":
                raise RuntimeError(f"strategy 'tpu': no TPU reachable ({exc})") from exc
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    """Short label for logs/state: 'default', 'MirroredStrategy', 'TPUStrategy', ..."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__
