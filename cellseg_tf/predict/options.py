"""What a prediction can be asked for, in one place: the choices, the option objects, and the output file names.

- The choices (`TILINGS`, `VOTES`, `TTA_CHOICES`, `PROB_FORMATS`, and `models.loading.PRECISIONS`): the CLI offers
  exactly these, the option objects accept exactly these.
- `PredictOptions`: how the `inference.Predictor` cuts, votes, augments and normalises. `BatchOptions` extends it
  with what the batch job writes and how it runs; the job saves it as `OUT/predict_config.yaml`.
- `output_paths(out, image, ...)`: the files the batch job writes for one input image. Evaluation, morphometry and
  the notebooks find predictions through it, never by rebuilding names.
- `run_normalization(model_paths)`: the percentiles the models were trained with, from the `.keras` files
  themselves (`models.metadata`), else from their runs' configs.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..data.manifest import output_stem
from ..data.preprocessing import NORM_HIGH, NORM_LOW
from ..models.loading import PRECISIONS
from ..models.metadata import checkpoint_info
from ..training.config import TrainConfig

TILINGS = ("overlap", "grid")
VOTES = ("soft", "hard")
# (k quarter-turns, flip left-right first) — the dihedral group D4 and its flip-only subgroup.
TTA_MODES: dict[str, list[tuple[int, bool]]] = {
    "none": [(0, False)],
    "flip": [(0, False), (0, True), (2, True), (2, False)],          # id, left-right, up-down, 180°
    "d4": [(k, f) for f in (False, True) for k in range(4)],         # all 8 rotations/reflections
}
TTA_AUTO = "auto"   # the TTA the models' validation chose (RUN/instances.yaml), else none
TTA_CHOICES = (TTA_AUTO, *TTA_MODES)
PROB_FORMATS = {"npy": ".npy", "tiff": ".tif"}
DEFAULT_NORM = (NORM_LOW, NORM_HIGH)  # percentiles when neither the options nor the models' runs give them


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


@dataclass
class PredictOptions:
    """How the ensemble predicts a tiled image. Defaults: overlap tiling, soft vote at 0.5, TTA "auto".

    patch_size: tile size in px (None: the models' saved input size, 256 for size-free models).
    overlap: fraction of a tile shared with its neighbour (0 <= overlap < 1; tiling "overlap" only).
    batch_size: tiles per compiled call (None or 0: about 0.5 M tile pixels per call); halved on out-of-memory.
    tiling: "overlap" (blended overlapping tiles) | "grid" (non-overlapping patchify grid).
    vote: "soft" (weighted mean probability > threshold) | "hard" (strict weighted majority of binarised models,
    each at its `model_thresholds` entry, default `threshold`). tta: "none" | "flip" | "d4" | "auto" (what the
    models' validation chose when their run was tuned, `instance_params.run_tta`: d4 when it scored better there; else
    none; `Predictor.from_files` resolves it).
    group_weights / model_weights: vote weight of the `z_` and standard groups × per-model weights (`from_files`).
    norm_low / norm_high: normalisation percentiles (None: the models' run config, else NORM_LOW / NORM_HIGH).
    precision: "auto" | "float32" | "saved" (see `models.loading.load_models`).
    """

    patch_size: int | None = None
    overlap: float = 0.25
    batch_size: int | None = 8
    tiling: str = "overlap"
    vote: str = "soft"
    threshold: float = 0.5
    model_thresholds: list[float] | None = None
    tta: str = TTA_AUTO
    group_weights: dict[str, float] = field(default_factory=dict)
    model_weights: list[float] | None = None
    norm_low: float | None = None
    norm_high: float | None = None
    precision: str = "auto"

    def validate(self) -> "PredictOptions":
        """Check every field; returns self. Errors name the field and the allowed values."""
        _one_of("tiling", self.tiling, TILINGS)
        _one_of("vote", self.vote, VOTES)
        _one_of("tta", self.tta, TTA_CHOICES)
        _one_of("precision", self.precision, PRECISIONS)
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1 (or None for the models' own size), got {self.patch_size}")
        if self.model_thresholds is not None and self.vote != "hard":
            raise ValueError("per-model thresholds apply to the hard vote only (--vote hard); the soft vote "
                             "thresholds the mean probability at --threshold")
        low, high = self.normalization()
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= norm_low < norm_high <= 100, got {low}, {high}")
        return self

    def normalization(self) -> tuple[float, float]:
        """(norm_low, norm_high) with the defaults filled in."""
        return (DEFAULT_NORM[0] if self.norm_low is None else float(self.norm_low),
                DEFAULT_NORM[1] if self.norm_high is None else float(self.norm_high))


@dataclass
class BatchOptions(PredictOptions):
    """A `PredictOptions` plus what the batch job writes and how it runs. Defaults reproduce the classic job.

    save_prob: None | "npy" | "tiff" (also write the float32 vote map, channel 0 of instance-target maps);
    instances: also write instance labels (`instances.labels_from_maps` on the ensemble's maps) with the
    post-processing saved beside the models (RUN/instances.yaml, else `instance_params.InstanceParams()` defaults);
    min_size / fg_threshold / seed_threshold / seed_h / merge_threshold / small_fraction, when not None, override those
    values. The run-control fields (`RUN_CONTROL`: overwrite, shard, progress,
    flush_every_s) change how the job runs, not what it writes, and are left out of `predict_config.yaml`.
    """

    save_prob: str | None = None
    instances: bool = False
    min_size: int | None = None
    fg_threshold: float | None = None
    seed_threshold: float | None = None
    seed_h: float | None = None
    merge_threshold: float | None = None
    small_fraction: float | None = None
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    progress: bool = True
    flush_every_s: float = 5.0         # rewrite the CSV logs at most this often (and at the end)

    RUN_CONTROL = ("overwrite", "shard", "progress", "flush_every_s")

    def validate(self) -> "BatchOptions":
        super().validate()
        _one_of("save_prob", self.save_prob, (None, *PROB_FORMATS))
        if self.min_size is not None and self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        for name in ("fg_threshold", "seed_threshold", "seed_h", "merge_threshold", "small_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.shard is not None:
            check_shard(*self.shard)
        return self

    def describe(self) -> dict:
        """The fields that decide what the job writes, as plain YAML-ready values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUN_CONTROL}


def check_shard(i: int, n: int) -> tuple[int, int]:
    """(i, n) if it names shard i of n (1-based), else a ValueError."""
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard must be i/n with 1 <= i <= n, got {i}/{n}")
    return i, n


def output_paths(out: str | os.PathLike, image: str | os.PathLike, save_prob: str | None = None,
                 instances: bool = False) -> dict[str, Path]:
    """The files the batch job writes into `out` for input `image` (`stack.tif#k` for page k of a stack):
    {"mask": OUT/<stem>.png, ["prob": OUT/<stem>_prob.npy|.tif,] ["instances": OUT/<stem>_instances.tif]},
    <stem> being `data.manifest.output_stem(image)`."""
    out, stem = Path(out), output_stem(image)
    paths = {"mask": out / f"{stem}.png"}
    if save_prob:
        paths["prob"] = out / f"{stem}_prob{PROB_FORMATS[save_prob]}"
    if instances:
        paths["instances"] = out / f"{stem}_instances.tif"
    return paths


def saved_normalization(model_path: str | os.PathLike) -> tuple[float, float] | None:
    """(norm_low, norm_high) saved inside a `.keras` file (`models.metadata.checkpoint_info`), or None (a model
    from elsewhere, an older checkpoint, or a file the model loader will report as unreadable)."""
    try:
        info = checkpoint_info(model_path) if Path(model_path).is_file() else {}
    except ValueError:
        return None
    if info.get("norm_low") is None or info.get("norm_high") is None:
        return None
    return float(info["norm_low"]), float(info["norm_high"])


def run_normalization(model_paths: Sequence[str | os.PathLike]) -> tuple[float, float] | None:
    """(norm_low, norm_high) percentiles the models were trained with: for each model, what its `.keras` file
    carries (`saved_normalization`) first, else the `config.yaml` of its run folder (RUN/best.keras,
    RUN/epochs/epoch_003.keras, CVDIR/fold_k/best.keras, read with `TrainConfig.load`); None when no model has
    either (the caller's defaults apply).

    Prediction must normalise like training did; models trained with different percentiles cannot share one
    normalisation, so that is an error.
    """
    import yaml

    found: dict[tuple[float, float], list[str]] = {}
    for p in model_paths:
        saved = saved_normalization(p)
        if saved is not None:
            found.setdefault(saved, []).append(str(p))
            continue
        for folder in (Path(p).parent, Path(p).parent.parent):
            cfg = folder / "config.yaml"
            if cfg.is_file():
                try:
                    config = TrainConfig.load(cfg)
                except (ValueError, yaml.YAMLError) as exc:
                    raise ValueError(f"{cfg}: cannot read the run config of {p} ({exc})") from None
                found.setdefault((float(config.norm_low), float(config.norm_high)), []).append(str(p))
                break
    if len(found) > 1:
        listing = "; ".join(f"{lo:g}/{hi:g}: {', '.join(ps)}" for (lo, hi), ps in found.items())
        raise ValueError(f"the models were trained with different normalisation percentiles ({listing}); "
                         "predict them as separate ensembles, or force one with --norm-low/--norm-high")
    return next(iter(found)) if found else None
