"""cellseg_tf: few-shot microscopy cell segmentation with TensorFlow/Keras 3.

The sub-packages follow the pipeline, and data flows one way through them (tests/test_architecture.py holds it):
common (atomic files, figures) -> data (manifest, readers, normalisation, tiling, augmentation, tf.data)
-> models -> training (losses, metrics, config, engine, cross-validation) -> predict (ensemble, tiled inference,
instances, batch job) -> analysis (evaluation, morphometry, statistics) -> demo, cli.
Heavy modules (TensorFlow) are imported lazily so `import cellseg_tf` stays cheap. The flat names of earlier
versions (`cellseg_tf.io`, `cellseg_tf.inference`, ...) still import: they are aliases of the modules' new homes.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

__all__ = ["__version__", "train"]

# Flat module name -> its home in the sub-package tree (kept so saved notebooks and scripts keep importing).
MOVED_MODULES = {
    "visualize": "common.visualize",
    **{name: f"data.{name}" for name in ("manifest", "io", "pairing", "stacks", "synthetic", "preprocessing",
                                         "tiling", "augment", "sampling", "dataset", "expand")},
    **{name: f"training.{name}" for name in ("losses", "metrics", "config", "callbacks", "schedules", "distribute",
                                             "crossval")},
    **{name: f"predict.{name}" for name in ("ensemble", "inference", "instances", "batch_predict")},
    **{name: f"analysis.{name}" for name in ("evaluation", "morphometry", "statistics")},
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `cellseg_tf.<old flat name>` to the module at its new home (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def train(config, **kwargs):
    """Train a model from a `TrainConfig` (see `cellseg_tf.training.engine.train`)."""
    from .training.engine import train as _train

    return _train(config, **kwargs)
