"""The ensemble voter: model groups and weights, soft/hard votes and test-time augmentation over batches of tiles.

Das et al. (§3.6) load many `.keras` files, split them into "z_models" (file name starts with `z_`) and standard
models, run every patch through all of them and threshold the mean. Here:

- every model gets a weight: its group weight (`{"z": w_z, "standard": w_s}`, default 1 each, so the default is the
  paper's plain mean) times an optional per-model weight; weights are normalised to sum to 1;
- soft vote: `p = Σ w_i p_i`, mask = `p > threshold`;
- hard vote: `v = Σ w_i [p_i > t_i]` (the weighted fraction of models saying "cell", `t_i` per-model thresholds,
  default `threshold`), mask = `v > 0.5` (a strict weighted majority; a tie is background);
- TTA: each tile is also predicted flipped/rotated, mapped back, and averaged per model before voting;
- models with several output channels (instance targets: ch0 foreground, ch1 boundary or distance, see
  `data.targets`): every channel is averaged with the same weights, so the ensemble hands ONE set of maps to the
  instance post-processing. The hard vote replaces ch0 by the weighted fraction of models saying "cell" and keeps the
  weighted mean of the other channels (a boundary or distance map has no per-model "yes/no");
- members must agree on input channels, tile size and target (`member_inputs`, `member_target` name the odd one).

`build_tile_fn` puts all of it into one function of a batch of tiles, which `inference.Predictor` compiles once
with `tf.function` (TF backend) so all members run in one graph call. The names of the votes and TTA modes live in
`options` (with the other choices a prediction offers).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .options import TTA_MODES, VOTES

GROUPS = ("z", "standard")


def model_group(path: str | os.PathLike) -> str:
    """The grouping of Das et al.: "z" for files whose name starts with `z_`, else "standard"."""
    return "z" if Path(path).name.startswith("z_") else "standard"


def member_weights(paths: Sequence[str | os.PathLike], group_weights: dict[str, float] | None = None,
                   weights: Sequence[float] | None = None) -> np.ndarray:
    """(M,) float64 vote weights summing to 1: group weight of each model × its own weight (default 1).

    group_weights: e.g. {"z": 2.0} makes every `z_` model count twice as much as a standard one.
    """
    group_weights = dict(group_weights or {})
    unknown = set(group_weights) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown model group(s) {sorted(unknown)}; groups are {', '.join(GROUPS)}")
    own = np.ones(len(paths)) if weights is None else np.asarray(weights, dtype=np.float64)
    if own.shape != (len(paths),):
        raise ValueError(f"got {own.size} model weights for {len(paths)} models")
    w = np.array([group_weights.get(model_group(p), 1.0) for p in paths], dtype=np.float64) * own
    return normalize_weights(w)


def normalize_weights(weights: Sequence[float]) -> np.ndarray:
    """Non-negative weights -> (M,) float64 summing to 1; all-zero or negative weights are an error."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w):
        raise ValueError("need one weight per model")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"model weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def member_inputs(models: Sequence, names: Sequence[str], patch_size: int | None = None,
                  default_patch: int = 256) -> tuple[int, int]:
    """(channels, tile size) shared by all ensemble members: their common input channels and fixed square input size
    (`patch_size` if given and compatible, else `default_patch` for models saved without a fixed size). A mix of
    channels, a non-square input or a mix of fixed tile sizes is an error naming each model (`names`)."""
    shapes = [tuple(m.inputs[0].shape[1:]) for m in models]
    channels = {s[-1] for s in shapes}
    if len(channels) != 1 or None in channels:
        listing = "; ".join(f"{n}: {s[-1]}" for n, s in zip(names, shapes))
        raise ValueError(f"ensemble models must expect the same number of channels, got {listing}")
    for n, s in zip(names, shapes):
        if s[0] != s[1]:
            raise ValueError(f"{n}: model input is {s[0]}×{s[1]}; tiles are square, use a square-input model")
    fixed = {n: s[0] for n, s in zip(names, shapes) if s[0] is not None}
    sizes = set(fixed.values())
    if len(sizes) > 1:
        listing = "; ".join(f"{n}: {p} px" for n, p in fixed.items())
        raise ValueError(f"ensemble models were saved for different tile sizes ({listing}); vote only models "
                         "trained with the same patch size, or run them as separate ensembles")
    if patch_size is None:
        return channels.pop(), sizes.pop() if sizes else default_patch
    if sizes and patch_size not in sizes:
        raise ValueError(f"patch_size={patch_size} but the models take {sizes.pop()} px tiles; "
                         "omit patch_size to use the models' own size")
    return channels.pop(), patch_size


def member_target(models: Sequence, names: Sequence[str]) -> tuple[str, int]:
    """(target kind, output channels) shared by all ensemble members (`models.target_kind`); members predicting
    different targets cannot be averaged, so that is an error naming each model (`names`) and its kind."""
    from ..models import target_kind

    kinds = [target_kind(m) for m in models]
    outs = [m.outputs[0].shape[-1] for m in models]
    if len(set(kinds)) > 1 or len(set(outs)) > 1:
        listing = "; ".join(f"{n}: {k} ({c} channel(s))" for n, k, c in zip(names, kinds, outs))
        raise ValueError(f"ensemble models must predict the same target, got {listing}; predict them as "
                         "separate ensembles")
    return kinds[0], int(outs[0])


def vote(probs: np.ndarray, weights: Sequence[float] | None = None, mode: str = "soft", threshold: float = 0.5,
         thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Reference (numpy) vote: (M, ...) member probabilities -> (...) float32 vote map.

    soft: weighted mean probability; hard: weighted fraction of members with p_i > t_i.
    """
    probs = np.asarray(probs, dtype=np.float32)
    w = normalize_weights(np.ones(len(probs)) if weights is None else weights)
    if mode == "soft":
        return np.tensordot(w, probs, axes=1).astype(np.float32)
    if mode == "hard":
        t = np.full(len(probs), threshold) if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        binary = probs > t.reshape((-1,) + (1,) * (probs.ndim - 1))
        return np.tensordot(w, binary.astype(np.float32), axes=1).astype(np.float32)
    raise ValueError(f"vote must be one of {', '.join(VOTES)}, got {mode!r}")


TIE_TOLERANCE = 1e-5  # blending tiles rounds a 0.5 tie of a hard vote to 0.5 ± a few float32 ulps


def decision_threshold(mode: str, threshold: float) -> float:
    """Threshold applied to the vote map: `threshold` for soft votes; for hard votes a strict majority, 0.5 plus
    TIE_TOLERANCE so that a tie stays background after blending."""
    return threshold if mode == "soft" else 0.5 + TIE_TOLERANCE


def binarize(vote_map: np.ndarray, mode: str = "soft", threshold: float = 0.5) -> np.ndarray:
    """Vote map -> bool mask (`vote_map > decision_threshold(mode, threshold)`)."""
    return np.asarray(vote_map) > decision_threshold(mode, threshold)


def tta_forward(x, k: int, flip: bool):
    """Transform a (B, P, P[, C]) batch of square tiles: optional left-right flip, then k quarter-turns."""
    import keras

    if flip:
        x = keras.ops.flip(x, axis=2)
    return keras.ops.rot90(x, k=k % 4, axes=(1, 2)) if k % 4 else x


def tta_inverse(y, k: int, flip: bool):
    """Undo `tta_forward` on a (B, P, P[, C]) batch: -k quarter-turns, then the flip."""
    import keras

    if k % 4:
        y = keras.ops.rot90(y, k=(4 - k) % 4, axes=(1, 2))
    return keras.ops.flip(y, axis=2) if flip else y


def build_tile_fn(models: list, weights: Sequence[float], vote_mode: str = "soft",
                  thresholds: Sequence[float] | None = None, tta: str = "none"):
    """A function (B, P, P, C) float32 tiles -> (B, P, P, K) float32 maps, backend-agnostic (keras.ops); K = the
    models' output channels (1: the vote map; all members must output the same K, see the module docstring).

    All members see the same batch (TTA copies concatenated along the batch axis, so each model is called once per
    batch); the per-model TTA mean is voted and accumulated. Never builds an (M, B, ...) stack of member outputs.
    """
    import keras

    ops = keras.ops
    if vote_mode not in VOTES:
        raise ValueError(f"vote must be one of {', '.join(VOTES)}, got {vote_mode!r}")
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    w = [float(v) for v in normalize_weights(weights)]
    if len(w) != len(models):
        raise ValueError(f"got {len(w)} weights for {len(models)} models")
    t = [0.5] * len(models) if thresholds is None else [float(v) for v in thresholds]
    if len(t) != len(models):
        raise ValueError(f"got {len(t)} per-model thresholds for {len(models)} models")
    transforms = TTA_MODES[tta]
    n_t = len(transforms)

    tf_graph = keras.backend.backend() == "tensorflow"

    def after(x, total):
        """x, but only once `total` exists: members run one after another, so at most one member's activations
        are alive at a time (peak memory does not grow with the number of models)."""
        if total is None or not tf_graph:
            return x
        import tensorflow as tf

        with tf.control_dependencies([total]):
            return tf.identity(x)

    def tile_fn(x):
        xs = x if n_t == 1 else ops.concatenate([tta_forward(x, k, f) for k, f in transforms], axis=0)
        total = None
        for model, wi, ti in zip(models, w, t):
            y = ops.cast(model(after(xs, total), training=False), "float32")  # (T·B, P, P, K)
            if n_t > 1:
                size = ops.shape(y)[0] // n_t
                parts = [tta_inverse(y[i * size:(i + 1) * size], k, f) for i, (k, f) in enumerate(transforms)]
                y = ops.sum(ops.stack(parts), axis=0) / n_t
            if vote_mode == "hard":
                fg = ops.cast(y[..., :1] > ti, "float32")
                y = fg if y.shape[-1] == 1 else ops.concatenate([fg, y[..., 1:]], axis=-1)
            total = wi * y if total is None else total + wi * y
        return total

    return tile_fn
