"""Few-shot adaptation end to end: extractors + K support images -> adapted `.keras` model + adaptation report.

    config = AdaptConfig(extractors=["a/best.keras", "b/best.keras"], support="new.csv", shots=5, out="new.keras")
    result = adapt(config)      # writes new.keras and new_adaptation.yaml

Steps: load the extractors (float32, safe mode) and check they fit together; draw the support rows and read them
with the extractors' normalisation; sample balanced, weighted support pixels and their features; solve the
perceptron (`solver.solve`: logistic regression, then BFGS on soft Dice, λ on held-out support pixels); write the
weights into the adapted model's 1×1 convolution and save it, with the report beside it. Every input is checked
before anything is written, so a bad input leaves no file behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import __version__
from ..common.files import atomic_path, write_text_atomic
from ..models.layers import FILTER_TRUNCATE, filter_radius
from ..models.metadata import describe
from ..predict.options import DEFAULT_NORM, run_normalization
from .extractors import build_adapted_model, common_input_shape, load_extractors, set_head
from .solver import (BFGS_GTOL, DEFAULT_DICE_ANCHOR, DEFAULT_DICE_AVERAGE, DEFAULT_LAMBDAS, DICE_METHOD,
                     LOGISTIC_MAXITER, PENALTIES, Solution, check_choice, solve)
from .support import default_max_tiles, draw_support, load_support, sample_support, tile_size

DEFAULT_MAX_PIXELS = 40_000
DEFAULT_FILTER_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)   # image filter scales, chosen on validation rows (docs/FEWSHOT.md)
DEFAULT_FEATURE_LEVELS = 1                       # the extractors' last block only (the paper's features)


def default_filter_sigmas(tile: int) -> list[float]:
    """The package's image filter scales whose kernels fit a `tile`-px feature tile (radius ceil(3σ) < tile):
    σ = 16 needs tiles over 48 px, so small tiles use σ ≤ 8."""
    return [s for s in DEFAULT_FILTER_SIGMAS if filter_radius(s) < tile]


@dataclass
class AdaptConfig:
    """Everything that defines an adaptation; saved in the report.

    extractors: `.keras` files (any package segmentation models; their features are concatenated).
    support: manifest whose split=train rows are the support set; shots: K rows drawn with `seed` (None: all).
    max_pixels: cap on sampled support pixels (memory and solver time); max_tiles: feature tiles computed per
    support image (None: `support.default_max_tiles`: 8 tiles of 128², fewer beyond 5 shots, 4 at 10).
    lambdas: L2 candidates for λ.
    norm_low / norm_high: normalisation percentiles (None: the extractors' own, see `normalization`).
    tile_size: feature tile side for extractors that accept any size (None: automatic, see `support.tile_size`).
    filter_sigmas: scales (px) of the image's own Gaussian-derivative filter responses added to the extractors'
    features (`models.layers.ImageFilters`); empty: extractor features only; None: the package's scales that fit
    the feature tile (`default_filter_sigmas`). Given scales must all fit it.
    feature_levels: map levels per extractor: 1 = the features of its last block (the input of its final 1×1
    classifier); n > 1 adds its maps of the next n − 1 coarser strides (2, 4, ...: a U-Net's decoder blocks)
    upsampled to full resolution (`extractors.coarser_maps`, hypercolumns after Hariharan 2015; an MSD has none).
    dice_average: the BFGS step's Dice, "image" (mean of the support images' Dice, as evaluation averages) or
    "pooled" (one Dice over all support pixels); see `solver`.
    dice_anchor: centre of the BFGS step's L2 penalty, "zero" (λ‖W‖², the paper's) or "logistic"
    (λ‖W − W_logistic‖²: the step stays near the logistic solution unless the support Dice pays for moving);
    see `solver`.
    """

    extractors: list[str] = field(default_factory=list)
    support: str = ""
    out: str = "adapted.keras"
    shots: int | None = None
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_tiles: int | None = None
    lambdas: list[float] = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    mask_threshold: float = 0.0
    norm_low: float | None = None
    norm_high: float | None = None
    tile_size: int | None = None
    filter_sigmas: list[float] | None = None
    feature_levels: int = DEFAULT_FEATURE_LEVELS
    dice_average: str = DEFAULT_DICE_AVERAGE
    dice_anchor: str = DEFAULT_DICE_ANCHOR
    batch_size: int = 4
    verbose: int = 1

    def validate(self) -> "AdaptConfig":
        if not self.extractors:
            raise ValueError("give at least one feature extractor (.keras)")
        if not self.support:
            raise ValueError("give the support manifest (its split=train rows are the support set)")
        if Path(self.out).suffix != ".keras":
            raise ValueError(f"{self.out}: the adapted model must be saved as a .keras file")
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"shots must be >= 1, got {self.shots}")
        if self.max_pixels < 2:
            raise ValueError(f"max_pixels must be >= 2, got {self.max_pixels}")
        if self.max_tiles is not None and self.max_tiles < 2:
            raise ValueError(f"max_tiles must be >= 2 (or None for the default), got {self.max_tiles}")
        if not self.lambdas or min(self.lambdas) < 0:
            raise ValueError(f"lambdas must be non-negative numbers, got {self.lambdas}")
        if self.batch_size < 1 or (self.tile_size is not None and self.tile_size < 16):
            raise ValueError("batch_size must be >= 1 and tile_size >= 16")
        if self.filter_sigmas and min(self.filter_sigmas) <= 0:
            raise ValueError(f"filter sigmas must be positive, got {self.filter_sigmas}")
        if self.feature_levels < 1:
            raise ValueError(f"feature_levels must be >= 1, got {self.feature_levels}")
        check_choice("dice_average", self.dice_average)
        check_choice("dice_anchor", self.dice_anchor)
        return self

    def normalization(self, extractor_paths: list[str]) -> tuple[float, float]:
        """(low, high): the config's, else what the extractors carry or their run configs say (they must agree),
        else the package defaults (`DEFAULT_NORM`)."""
        trained = run_normalization(extractor_paths)
        low = self.norm_low if self.norm_low is not None else (trained or DEFAULT_NORM)[0]
        high = self.norm_high if self.norm_high is not None else (trained or DEFAULT_NORM)[1]
        return float(low), float(high)


@dataclass
class AdaptResult:
    """The adapted model (in memory and on disk), its report (the dict saved beside it) and the solver's result."""

    model: object
    model_path: Path
    report_path: Path
    report: dict
    solution: Solution

    def model_with(self, which: str):
        """A copy of the adapted model holding the "logistic" or "bfgs" solution (for comparisons)."""
        import keras

        clone = keras.models.clone_model(self.model)
        clone.set_weights(self.model.get_weights())
        set_head(clone, *self.solution.kernel_bias(which))
        return clone


def report_path(model_path: str | os.PathLike) -> Path:
    """Where the adaptation report of `model_path` lives: beside it, `<stem>_adaptation.yaml`."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_adaptation.yaml")


def adapt(config: AdaptConfig, *, save: bool = True) -> AdaptResult:
    """Run the adaptation of `config` (see the module docstring); `save=False` keeps the model in memory only."""
    config.validate()
    t0 = time.perf_counter()
    paths = [str(p) for p in config.extractors]
    extractors = load_extractors(paths, config.feature_levels)
    input_shape = common_input_shape(extractors)
    low, high = config.normalization(paths)
    samples, available = draw_support(config.support, config.shots, config.seed)
    pairs = load_support(samples, int(input_shape[2]), low, high, config.mask_threshold)
    tile = tile_size(input_shape, [p.image for p in pairs], config.tile_size)
    if config.filter_sigmas is None:
        sigmas = default_filter_sigmas(tile)
    else:
        sigmas = [float(v) for v in config.filter_sigmas]
    if sigmas and filter_radius(max(sigmas)) >= tile:
        raise ValueError(f"filter sigma {max(sigmas):g} is too large for {tile}-px feature tiles (needs "
                         f"ceil({FILTER_TRUNCATE:g}·sigma) < tile); use smaller --filter-sigmas or a larger "
                         "AdaptConfig.tile_size")
    max_tiles = config.max_tiles or default_max_tiles(tile, len(pairs))
    model, features = build_adapted_model(extractors, input_shape, sigmas)
    t_load = time.perf_counter()

    pixels = sample_support(features.predict_on_batch, pairs, config.max_pixels, config.seed, tile, max_tiles,
                            config.batch_size, progress=config.verbose > 0)
    t_features = time.perf_counter()
    solution = solve(pixels.x, pixels.y, pixels.weight, pixels.group, config.lambdas, config.seed,
                     config.dice_average, config.dice_anchor)
    set_head(model, *solution.kernel_bias())
    describe(model, channels=int(input_shape[2]), norm_low=low, norm_high=high, mask_threshold=config.mask_threshold,
             patch_size=tile, version=__version__)      # the .keras file says how to normalise its inputs
    t_solve = time.perf_counter()

    out = Path(config.out)
    report = {
        "model": out.name,
        "extractors": [{"path": ex.path, "name": ex.name, "features": ex.n_features, "strides": ex.strides}
                       for ex in extractors],
        "image_filters": {"sigmas": sigmas, "features": int(pixels.x.shape[1]) - sum(ex.n_features
                                                                                  for ex in extractors)},
        "support": str(config.support),
        "support_rows": [{"row": s.row, "image": s.image} for s in samples],
        "shots": len(samples), "train_rows_available": available, "seed": config.seed,
        "channels": int(input_shape[2]), "norm_low": low, "norm_high": high, "tile_size": tile, "max_tiles": max_tiles,
        "sampled": pixels.counts,
        "lambda": solution.lam, "lambda_heldout_dice": solution.lambda_scores,
        "optimizers": {"logistic": f"scipy L-BFGS-B, at most {LOGISTIC_MAXITER} iterations (cross-entropy + "
                                   f"{PENALTIES['zero']})",
                       "bfgs": f"scipy {DICE_METHOD}, gradient max-norm < {BFGS_GTOL:g} (1 - soft Dice + "
                               f"{PENALTIES[solution.dice_anchor]})"},
        "dice_average": solution.dice_average,
        "dice_anchor": solution.dice_anchor,
        "bfgs_iterations": solution.bfgs_iterations,
        "support_dice": {"logistic": solution.dice_logistic, "bfgs": solution.dice_bfgs,
                         "soft_logistic": solution.soft_dice_logistic, "soft_bfgs": solution.soft_dice_bfgs},
        "chosen": solution.chosen,
        "seconds": {"load": round(t_load - t0, 3), "features": round(t_features - t_load, 3),
                    "solve": round(t_solve - t_features, 3), "total": round(t_solve - t0, 3)},
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "verbose"},
    }
    report = json.loads(json.dumps(report, default=float))  # plain floats/ints only (numpy scalars -> float)
    rpath = report_path(out)
    if save:
        with atomic_path(out) as tmp:
            model.save(tmp)
        write_text_atomic(rpath, yaml.safe_dump(report, sort_keys=False))
    return AdaptResult(model, out, rpath, report, solution)
