"""Few-shot adaptation (Vădineanu 2025): a new structure from a handful of annotated images in seconds.

Frozen feature extractors (any package segmentation models, e.g. the `msd` network) give full-resolution feature
maps; a perceptron (one 1×1 convolution, d + 1 weights) recombines them for the new structure, fitted on the support
images by logistic regression and then BFGS on the Dice loss. The result is an ordinary `.keras` model.

- `adapt(AdaptConfig(...))` / `cellseg-tf adapt`: the whole adaptation (`adapt.py`).
- `extractors.py`: finding a model's features, building the adapted model.
- `support.py`: support rows, balanced weighted pixel sampling, tiled feature gathering.
- `solver.py`: the numpy/scipy optimisation (logistic regression, BFGS on soft Dice, λ on held-out pixels).
"""
from .adapt import AdaptConfig, AdaptResult, adapt, report_path
from .extractors import build_adapted_model, feature_tensor, head_weights, load_extractors

__all__ = ["AdaptConfig", "AdaptResult", "adapt", "report_path", "build_adapted_model", "feature_tensor",
           "head_weights", "load_extractors"]
