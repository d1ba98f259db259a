"""cellseg_tf: few-shot microscopy cell segmentation with TensorFlow/Keras 3.

Data flows one way through the modules:
manifest -> io -> preprocessing -> tiling -> augment -> dataset -> models -> losses/metrics -> config -> training
-> inference -> evaluation -> reports (demo, cli).
Heavy modules (TensorFlow) are imported lazily so `import cellseg_tf` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "train"]


def train(config, **kwargs):
    """Train a model from a `TrainConfig` (see `cellseg_tf.training.train`)."""
    from .training import train as _train

    return _train(config, **kwargs)
