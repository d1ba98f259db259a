"""Pictures people would rather see than read: training curves, prediction-vs-truth overlays, histograms (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import atomic_path


def _save_figure(fig, path: Path) -> Path:
    """Save atomically (a temp file with the same suffix, then rename) and close."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def plot_histograms(columns: "dict[str, np.ndarray]", path: str | Path, title: str = "", bins: int = 30) -> Path:
    """One histogram per named column of values, side by side -> PNG at `path` (NaNs ignored)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], columns.items()):
        values = np.asarray(values, np.float64)
        ax.hist(values[np.isfinite(values)], bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("cells")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def plot_curves(history: "dict[str, list[float]]", path: str | Path, title: str = "") -> Path:
    """Loss and Dice per epoch, train vs val, side by side -> PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "dice")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values is not None and len(values):
                ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", ms=3,
                        label=("val " if prefix else "train ") + key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 (H, W, 3): grey image with true positives green, false positives magenta, false negatives cyan.

    image: (H, W[, C]) float in [0, 1]; pred/truth: (H, W) {0, 1}. Without truth, the prediction is drawn green.
    """
    img = np.asarray(image, np.float32)
    grey = img if img.ndim == 2 else img.mean(axis=-1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    p = np.asarray(pred) > 0
    colours = []
    if truth is None:
        colours.append((p, (0.0, 1.0, 0.0)))
    else:
        t = np.asarray(truth) > 0
        colours += [(p & t, (0.0, 1.0, 0.0)), (p & ~t, (1.0, 0.0, 1.0)), (~p & t, (0.0, 1.0, 1.0))]
    for where, colour in colours:
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
