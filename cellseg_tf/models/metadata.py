"""A saved model describes itself: what prediction needs travels inside every `.keras` file the package writes.

The carrier is the model's output layer, the registered `TargetHead`: its config holds `info`, a flat dict of plain
values (`INFO_KEYS`), so it is saved with the architecture, loads in safe mode, survives a re-save and a
mixed-precision -> float32 rebuild, and a checkpoint copied alone to another folder still says

    model           registry name the model was built as ("unet", ...)
    channels        input channels (1 grey, 3 RGB)
    norm_low/high   percentile normalisation it was trained with
    mask_threshold  mask pixel > this was foreground in its training masks
    patch_size      training patch size (px)
    target          what its output channels mean (data.targets; also the head's own `kind`)
    version         cellseg_tf version that wrote it

Writers call `describe(model, ...)` once after building (training does, `training.engine`, passing the package
version); every later save carries it. Readers: `model_info(model)` for a loaded model, `checkpoint_info(path)` for a file (reads the `.keras` zip's
config.json, builds nothing). Models from elsewhere (and checkpoints older than this) have no info: {}.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from .heads import output_head

INFO_KEYS = ("model", "channels", "norm_low", "norm_high", "mask_threshold", "patch_size", "target", "version")
INT_KEYS = ("channels", "patch_size")


def _plain(key: str, value):
    """A JSON-safe scalar for `key` (int for INT_KEYS, float for other numbers, str for names)."""
    if value is None or isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"model info {key!r} must be a number or a name, got {value!r}") from None
    return int(number) if key in INT_KEYS else number


def describe(net, /, **info) -> dict:
    """Store `info` (keys from INFO_KEYS; `target` is filled in from the head) in the TargetHead of model `net`, so
    every later `net.save` carries it; returns the stored dict. Keys given earlier and not now are kept. A model
    without a TargetHead output is an error.

    describe(model, model="unet", channels=1, norm_low=1.0, norm_high=99.8, mask_threshold=0, patch_size=128,
             version=cellseg_tf.__version__)
    """
    head = output_head(net)
    if head is None:
        raise ValueError(f"{getattr(net, 'name', 'model')}: its output is not a TargetHead, so it cannot carry "
                         "its prediction settings")
    unknown = sorted(set(info) - set(INFO_KEYS))
    if unknown:
        raise ValueError(f"unknown model info key(s) {unknown}; known: {', '.join(INFO_KEYS)}")
    stored = {**head.info, **{k: _plain(k, v) for k, v in info.items()}, "target": head.kind}
    head.info = stored
    return dict(stored)


def model_info(model) -> dict:
    """The info a loaded (or built) model carries: {} when its output is not a TargetHead or nothing was stored."""
    head = output_head(model)
    return dict(head.info) if head is not None and head.info else {}


def checkpoint_info(path: str | os.PathLike) -> dict:
    """The info inside a `.keras` file, read from its config.json (no model is built): {} for a file without it
    (a model from elsewhere, an older checkpoint). A file that is not a readable `.keras` zip is a ValueError."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a Keras 3 .keras file ({exc})") from None
    cfg = config.get("config", {})
    outputs = cfg.get("output_layers") or []
    if outputs and isinstance(outputs[0], str):      # a single output may be saved unnested: [name, 0, 0]
        outputs = [outputs]
    names = {o[0] for o in outputs[:1]}
    for layer in cfg.get("layers", []):
        if layer.get("config", {}).get("name", layer.get("name")) in names:
            registered = str(layer.get("registered_name") or layer.get("class_name"))
            if registered.split(">")[-1] == "TargetHead":
                return dict(layer["config"].get("info") or {})
    return {}


__all__ = ["INFO_KEYS", "describe", "model_info", "checkpoint_info"]
