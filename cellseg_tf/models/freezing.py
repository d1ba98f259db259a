"""Which encoder layers train: ONE rule, used by the model builders (at build time) and by the training engine
(for a frozen-then-fine-tune schedule, docs/TRAINING.md).

An encoder is split into blocks, shallow -> deep:
- zoo models: the nested sub-model `{backbone}_encoder` (or `encoder`); a block ends at each of its outputs
  (skip 1 | skip 2 | ... | skip n | bridge), so VGG16 has 5 blocks, the stride-32 backbones 5 as well;
- the U-Net family (`unet`, `attention_unet`): the layers `enc{level}_*`, one block per level.

A trainable spec (`encoder_trainable=` of the encoder model builders, `unfreeze_blocks` of TrainConfig) says which:

  0      every encoder layer frozen, BatchNorm statistics included (frozen BatchNorm runs in inference mode)
  k > 0  the deepest k blocks train; their BatchNorm layers stay frozen (ImageNet statistics are kept: a few small
         microscopy batches would wreck them — the usual fine-tuning practice)
  "all"  the whole encoder trains, BatchNorm included (an encoder trained from scratch, or a full fine-tune)
"""
from __future__ import annotations

import numbers
import re
import warnings

ALL = "all"
_UNET_BLOCK = re.compile(r"^enc(\d+)_")
# model options of earlier versions, mapped onto `encoder_trainable` by `legacy_encoder_options`
LEGACY_OPTIONS = ("encoder_freeze", "unfreeze_blocks", "train_encoder_bn")


def check_spec(spec, n_blocks: int | None = None, what: str = "encoder_trainable") -> int | str:
    """The spec as an int in 0..n_blocks or "all"; ValueError naming `what` otherwise (n_blocks None: no bound)."""
    if isinstance(spec, str) and spec.strip().lower() == ALL:
        return ALL
    k = None
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        k = int(spec)
    elif isinstance(spec, str) and spec.strip().isdigit():
        k = int(spec)
    if k is None or k < 0 or (n_blocks is not None and k > n_blocks):
        allowed = f"0..{n_blocks}" if n_blocks is not None else "an integer >= 0"
        raise ValueError(f"{what} must be {allowed} (encoder blocks that train, deepest first; 0 = frozen) "
                         f"or 'all', got {spec!r}")
    return k


def _is_encoder_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model) and (layer.name == "encoder" or layer.name.endswith("_encoder"))


def _output_blocks(encoder) -> list[list]:
    """Blocks of a functional encoder: layers up to and including the layer of output i form block i."""
    ends = [encoder.layers.index(t._keras_history[0]) for t in encoder.outputs]
    blocks: list[list] = [[] for _ in ends]
    block = 0
    for i, layer in enumerate(encoder.layers):
        while block < len(ends) - 1 and i > ends[block]:
            block += 1
        if i <= ends[-1]:
            blocks[block].append(layer)
    return blocks


def encoder_blocks(model) -> tuple[list[list], list]:
    """(blocks shallow -> deep, each a list of layers; the nested encoder sub-models holding them).

    Raises ValueError naming the model when it has no encoder this module recognises (see the module docstring).
    """
    if _is_encoder_model(model):
        return _output_blocks(model), [model]
    nested = [layer for layer in model.layers if _is_encoder_model(layer)]
    if len(nested) == 1:
        return _output_blocks(nested[0]), nested
    levels: dict[int, list] = {}
    for layer in model.layers:
        match = _UNET_BLOCK.match(layer.name)
        if match:
            levels.setdefault(int(match.group(1)), []).append(layer)
    if levels and not nested:
        return [levels[k] for k in sorted(levels)], []
    found = f"{len(nested)} encoder sub-models" if nested else "no encoder"
    raise ValueError(f"model {model.name!r}: {found}; freezing needs one nested 'encoder'/'*_encoder' sub-model "
                     "or U-Net 'enc<level>_' layers")


def set_encoder_trainable(model, spec, what: str = "encoder_trainable") -> int | str:
    """Set the trainable flags of `model`'s encoder per `spec` (0 | k | "all"; see the module docstring).

    Only encoder layers are touched (the decoder keeps its flags). Recompile a compiled model afterwards.
    Returns the checked spec; `what` names the setting in errors.
    """
    import keras

    blocks, containers = encoder_blocks(model)
    spec = check_spec(spec, len(blocks), f"{model.name}: {what}")
    for container in containers:          # Model.trainable cascades to every child; the leaves are set below
        container.trainable = True
    first = 0 if spec == ALL else len(blocks) - spec
    for index, layers in enumerate(blocks):
        for layer in layers:
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = index >= first and (spec == ALL or not is_bn)
    return spec


def legacy_encoder_options(options: dict, where: str = "model options") -> dict:
    """Map earlier encoder options onto `encoder_trainable`, with a FutureWarning (saved configs keep loading).

    encoder_freeze=False -> "all"; unfreeze_blocks=k (encoder_freeze True, the old default) -> k. train_encoder_bn is
    dropped: partially unfrozen encoders keep BatchNorm frozen, "all" trains it.
    """
    old = {k: options[k] for k in LEGACY_OPTIONS if k in options}
    if not old:
        return options
    if "encoder_trainable" in options:
        raise ValueError(f"{where}: give encoder_trainable alone, not with the older {', '.join(old)}")
    spec = ALL if not old.get("encoder_freeze", True) else check_spec(old.get("unfreeze_blocks", 0),
                                                                     what="unfreeze_blocks")
    note = " (train_encoder_bn is gone: 'all' trains BatchNorm, fewer blocks keep it frozen)" \
        if old.get("train_encoder_bn") else ""
    warnings.warn(f"{where}: {', '.join(f'{k}={v!r}' for k, v in old.items())} is read as "
                  f"encoder_trainable={spec!r}{note}; write encoder_trainable instead", FutureWarning, stacklevel=3)
    rest = {k: v for k, v in options.items() if k not in LEGACY_OPTIONS}
    return {**rest, "encoder_trainable": spec}


__all__ = ["ALL", "check_spec", "encoder_blocks", "set_encoder_trainable", "legacy_encoder_options"]
