"""The `cellseg-tf` argument parser: every command's flags. `cli` maps the parsed flags onto package calls.

Choices come from the package's registries and constants (`predict.options`, `training.config`, `data.manifest`),
never retyped; they are imported inside the functions, so importing this module alone loads no package code.
"""
from __future__ import annotations

import argparse
from typing import Callable, Mapping

DESCRIPTION = "`cellseg-tf` command line: a thin layer mapping flags onto package calls (demo, train, predict, evaluate)."


def float_list(text: str) -> list[float]:
    """'1,2,4' -> [1.0, 2.0, 4.0]; 'none' or '' -> [] (argparse type: a bad number is a usage error)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers or 'none', got {text!r}") from None


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `cv`; each maps onto a TrainConfig field (unset flags keep --config/defaults)."""
    from .training.config import STRATEGIES

    p.add_argument("--manifest")
    p.add_argument("--model")
    p.add_argument("--loss")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (split across replicas)")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--augmentation")
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", help="adam (default) | adamw | sgd")
    p.add_argument("--schedule", help="cosine (default) | constant | exponential | plateau (options: --set schedule_options=...)")
    p.add_argument("--ema-momentum", type=float,
                   help="validate and save the moving average of the weights with this momentum, e.g. 0.99 (0: off)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 disables)")
    p.add_argument("--checkpoint-every-epoch", action="store_true", help="also keep RUN/epochs/epoch_NNN.keras")
    p.add_argument("--tensorboard", action="store_true", help="write RUN/tensorboard/")
    p.add_argument("--freeze-encoder-epochs", type=int, help="epochs with the encoder frozen before fine-tuning")
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--mask-threshold", type=float, help="mask pixel > this is foreground (127: anti-aliased masks)")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    p.add_argument("--mixed-precision", choices=("auto", "on", "bfloat16", "off"))
    p.add_argument("--config", help="YAML/JSON TrainConfig; flags override it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any TrainConfig field, VALUE as YAML (repeatable): --set model_options={base_filters: 8}")
    p.add_argument("--seed", type=int)
    p.add_argument("--verbose", type=int)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """--quiet: no progress bar (commands with a long loop)."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser(handlers: Mapping[str, Callable[[argparse.Namespace], int]] | None = None
                 ) -> argparse.ArgumentParser:
    """The `cellseg-tf` parser, one sub-command per package entry point.

    handlers: command name -> function(args) -> exit code, stored as `args.func` (`cli.COMMANDS`); every command
    needs one. Without handlers the parser only parses (docs, tests).
    """
    parser = argparse.ArgumentParser(prog="cellseg-tf", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic data -> train -> predict -> evaluate")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="a tiny run (6 images of 64 px, 1 epoch of 2 steps) that only checks the install works")

    p = sub.add_parser("train", help="train a model from a manifest")
    add_train_flags(p)
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last completed epoch")
    p.add_argument("--no-tune", action="store_true",
                   help="skip tuning the cell post-processing on the validation images (instance targets only)")

    p = sub.add_parser("tune", help="tune a run's cell post-processing on its validation images -> instances.yaml")
    p.add_argument("run", help="a training run folder (best.keras, config.yaml)")
    from .predict.tuning import DEFAULT_OBJECTIVE, OBJECTIVES

    p.add_argument("--objective", choices=tuple(OBJECTIVES), default=DEFAULT_OBJECTIVE,
                   help="rank the grid by panoptic quality (F1@0.5 x mean matched IoU; default) or F1@0.5 alone")
    add_quiet(p)

    p = sub.add_parser("cv", help="k-fold cross-validation: one run per fold + summary.csv + models.txt")
    add_train_flags(p)
    p.add_argument("--folds", type=int, default=5, help="k (ignored when the manifest has a fold column)")
    p.add_argument("--out", required=True, help="CVDIR: fold_<k>/ runs, folds.csv, summary.csv, models.txt")
    p.add_argument("--resume", action="store_true", help="skip finished folds, continue an interrupted one")
    p.add_argument("--ignore-fold-column", action="store_true", help="seeded k-fold even if the manifest has folds")
    add_quiet(p)

    from .predict.options import PRECISIONS, PROB_FORMATS, TILINGS, TTA_CHOICES, VOTES

    p = sub.add_parser("predict", help="tiled (ensemble) prediction over a folder, list file or manifest")
    p.add_argument("--model", action="append", required=True,
                   help="a .keras file, or a .txt list of them (CVDIR/models.txt); repeat for an ensemble")
    p.add_argument("--input", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=8, help="tiles per compiled call; 0 = auto from tile size")
    p.add_argument("--tiling", choices=TILINGS, default="overlap",
                   help="overlap: blended overlapping tiles (no seams); grid: non-overlapping patchify grid")
    p.add_argument("--vote", choices=VOTES, default="soft",
                   help="soft: weighted mean probability > threshold; hard: weighted majority of binarised models")
    p.add_argument("--tta", nargs="?", const="d4", default="auto", choices=TTA_CHOICES,
                   help="test-time augmentation: flip (4 flips), d4 (8 flips/rotations; the default of bare --tta), "
                        "none, or auto (default: what the models' run chose on its validation images when it was "
                        "tuned, RUN/instances.yaml; else none)")
    p.add_argument("--group-weight", action="append", metavar="GROUP=W",
                   help="vote weight of every model of a group: z (files named z_*) or standard; default 1")
    p.add_argument("--model-weights", type=float_list, metavar="W1,W2,...",
                   help="extra per-model weights, in --model order")
    p.add_argument("--model-thresholds", type=float_list, metavar="T1,T2,...",
                   help="per-model thresholds for --vote hard")
    p.add_argument("--save-prob", choices=tuple(PROB_FORMATS), help="also write OUT/<stem>_prob.npy|.tif (float32)")
    p.add_argument("--instances", action="store_true",
                   help="also write OUT/<stem>_instances.tif (uint16 cell labels; touching cells split by models "
                        "trained on an instance target), post-processed as RUN/instances.yaml beside the model says")
    p.add_argument("--min-size", type=int,
                   help="smallest cell kept by --instances, in px (default: RUN/instances.yaml, else 16)")
    p.add_argument("--fg-threshold", type=float,
                   help="--instances: foreground probability threshold (default: RUN/instances.yaml, else --threshold)")
    p.add_argument("--seed-threshold", type=float,
                   help="--instances: cell-core threshold on the boundary/distance map (default: RUN/instances.yaml, "
                        "else 0.5)")
    p.add_argument("--seed-h", type=float,
                   help="--instances: keep only cell cores that rise this much (0-1) above where they meet a "
                        "neighbour; 0 = every thresholded core (default: RUN/instances.yaml, else 0)")
    p.add_argument("--merge-threshold", type=float,
                   help="--instances: join touching cells whose shared border scores above this as cell interior "
                        "(default: RUN/instances.yaml, else 1 = never)")
    p.add_argument("--small-fraction", type=float,
                   help="--instances: cells under this fraction of the image's median cell area join their "
                        "neighbour (default: RUN/instances.yaml, else 0 = off)")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs already exist")
    p.add_argument("--norm-low", type=float, help="normalisation percentile (default: the models' run config, else 2)")
    p.add_argument("--norm-high", type=float, help="normalisation percentile (default: the run config, else 98)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: mixed-precision models run in float32 where there is no GPU")
    p.add_argument("--shard", metavar="I/N", help="process only shard I of N (1-based), e.g. one per Colab session")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("evaluate", help="score predictions against manifest masks")
    p.add_argument("--pred", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--mask-threshold", type=float, default=0,
                   help="truth mask pixel > this is foreground (default 0 keeps instance labels; 127: anti-aliased)")
    add_quiet(p)

    p = sub.add_parser("compare", help="paired statistics of two evaluate reports of the same images (B vs A)")
    p.add_argument("a", help="report CSV of the reference (cellseg-tf evaluate --out)")
    p.add_argument("b", help="report CSV of the candidate; wins count images where B is better")
    p.add_argument("--metric", default="dice", help="report column to compare (hausdorff*: smaller is better)")
    p.add_argument("--threshold", type=float, default=0.75,
                   help="Beta credible interval of the share of images whose score meets this")
    p.add_argument("--level", type=float, default=0.95, help="confidence / credible level")
    p.add_argument("--out", default="compare.csv", help="summary CSV; <name>_per_image.csv goes beside it")

    p = sub.add_parser("adapt", help="few-shot: recombine frozen models' features for a new structure from K images")
    p.add_argument("--extractor", action="append", required=True,
                   help="a trained .keras model whose features are used (repeat to concatenate several)")
    p.add_argument("--support", required=True, help="manifest whose split=train rows are the support set")
    p.add_argument("--shots", type=int, help="K support images drawn with --seed (default: all train rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="adapted .keras model; <stem>_adaptation.yaml goes beside it")
    p.add_argument("--max-pixels", type=int, help="cap on sampled support pixels (default 40000)")
    p.add_argument("--mask-threshold", type=float, default=0, help="mask pixel > this is foreground")
    p.add_argument("--filter-sigmas", type=float_list, default=None, metavar="S1,S2,...",
                   help="also use the image's Gaussian-derivative filter responses at these scales in px "
                        "(e.g. 1,2,4,8); 'none' = extractor features only (default: the package's scales whose "
                        "kernels fit the feature tile)")
    p.add_argument("--feature-levels", type=int, default=None, metavar="N",
                   help="map levels per extractor: 1 = its last block's features; N > 1 adds its N-1 next coarser "
                        "maps (a U-Net's decoder blocks) upsampled to full resolution (default: the package's)")
    p.add_argument("--dice-average", default=None, metavar="image|pooled",
                   help="Dice of the BFGS step: mean of the support images' Dice (image, default) or one Dice "
                        "over all their pixels (pooled)")
    p.add_argument("--dice-anchor", default=None, metavar="zero|logistic",
                   help="centre of the BFGS step's L2 penalty: zero (lambda*|W|^2, the paper's; default) or the "
                        "logistic weights (lambda*|W - W_logistic|^2)")
    add_quiet(p)

    p = sub.add_parser("morphometry", help="per-cell measurements (area, shape, intensity) of predicted masks")
    p.add_argument("--pred", required=True, help="the predict job's OUT folder")
    p.add_argument("--input", required=True, help="the images that were predicted: folder, list file or manifest")
    p.add_argument("--split", default=None, help="manifest split to measure (default: all rows)")
    p.add_argument("--out", required=True, help="cells CSV (one row per cell); <name>_per_image.csv goes beside it")
    p.add_argument("--pixel-size", type=float, default=1.0, help="length of a pixel (e.g. 0.65 for µm); 1 = pixels")
    p.add_argument("--min-size", type=int, default=16, help="objects under this many px are dropped")
    add_quiet(p)

    p = sub.add_parser("expand", help="offline expansion: write K augmented variants per pair + a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for images/, masks/ and manifest.csv")
    p.add_argument("--variants", type=int, default=21, help="augmented variants per pair (Das et al. 2025: 21)")
    p.add_argument("--policy", default="brightfield_2stage")
    p.add_argument("--split", default="train")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--mask-threshold", type=float, default=0, help="mask pixel > this is foreground (127: anti-aliased)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-original", action="store_true", help="list only the variants, not the original pairs")
    add_quiet(p)

    from .data.manifest import SPLITS

    p = sub.add_parser("patches", help="offline patching: cut manifest pairs into fixed-size tiles + a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for images/, masks/ and manifest.csv (the tiles)")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    p.add_argument("--step", type=int, help="pixels between tile origins (default: --size; smaller overlaps tiles)")
    p.add_argument("--split", default="train", choices=SPLITS + ("all",), help="manifest rows to cut (all: every row)")
    add_quiet(p)

    p = sub.add_parser("manifest", help="a folder of images + a folder of masks (paired by name) -> manifest")
    p.add_argument("--images", required=True, help="folder of images (.tif/.tiff/.png/.jpg)")
    p.add_argument("--masks", help="folder of masks (default: beside the images, named <stem>_mask.* etc.)")
    p.add_argument("--out", required=True, help="manifest CSV to write (paths relative to it)")
    p.add_argument("--val", type=float, default=0.0, help="fraction of pairs for validation (0: training picks 20%%)")
    p.add_argument("--test", type=float, default=0.0, help="fraction of pairs held out as test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="")
    p.add_argument("--modality", default="")
    p.add_argument("--mask-suffix", action="append", help="mask name suffix (repeatable; default _mask, _label, ...)")
    p.add_argument("--unlabelled-as-test", action="store_true", help="add images without a mask as test rows")
    add_quiet(p)

    p = sub.add_parser("stacks", help="multi-page TIFF stacks (Stacked_*.tif + *_Mask.tif) -> manifest")
    p.add_argument("--folder", required=True)
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--pattern", default="Stacked_*.tif*")
    p.add_argument("--mask-suffix", default="_Mask")
    p.add_argument("--split", default="train")
    p.add_argument("--extract-to", help="write each frame as its own TIFF here instead of addressing stack.tif#k")

    if handlers is not None:
        missing = sorted(set(sub.choices) - set(handlers))
        if missing:
            raise KeyError(f"no handler for command(s) {missing}")
        for name, command in sub.choices.items():
            command.set_defaults(func=handlers[name])
    return parser
