"""`cellseg-tf` command line: a thin layer mapping flags onto package calls (demo, train, predict, evaluate)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, n_images=args.n_images, epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    print(json.dumps(summary, indent=2))
    print(f"dice={summary['dice']:.4f} n_test={summary['n_test']} train_seconds={summary['train_seconds']}")
    return 0


def _train_config(args):
    """TrainConfig from --config (or defaults), then the explicit flags, then --set KEY=VALUE overrides."""
    from .config import TrainConfig

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    flags = {"manifest": args.manifest, "out": args.out, "model": args.model, "loss": args.loss, "epochs": args.epochs,
             "patch_size": args.patch_size, "batch_size": args.batch_size, "seed": args.seed,
             "augmentation": args.augmentation, "learning_rate": args.lr, "channels": args.channels,
             "mask_threshold": args.mask_threshold,
             "steps_per_epoch": args.steps_per_epoch, "time_budget_s": args.time_budget,
             "mixed_precision": args.mixed_precision, "verbose": args.verbose, "optimizer": args.optimizer,
             "schedule": args.schedule, "early_stopping_patience": args.patience, "strategy": args.strategy,
             "freeze_encoder_epochs": args.freeze_encoder_epochs,
             "checkpoint_every_epoch": True if args.checkpoint_every_epoch else None,
             "tensorboard": True if args.tensorboard else None}
    for key, value in flags.items():
        if value is not None:
            setattr(config, key, value)
    return config.override(args.set)


def cmd_train(args) -> int:
    from .training import train

    if args.resume:
        run = Path(args.resume)
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(f"{run}: no config.yaml here; --resume takes the folder of an earlier run")
        args.config = args.config or str(run / "config.yaml")
        args.out = str(run)
    config = _train_config(args)
    if not config.manifest:
        raise SystemExit("cellseg-tf train: --manifest is required (or set manifest: in --config)")
    result = train(config, resume=bool(args.resume))
    print(f"best_model={result.best_model} best_val_dice={result.best_val_dice:.4f} "
          f"train_seconds={result.train_seconds:.1f} epochs={len(result.history.get('loss', []))} "
          f"stop_reason={result.stop_reason}")
    return 0


def cmd_cv(args) -> int:
    from .crossval import format_summary, run_cv

    config = _train_config(args)
    if not config.manifest:
        raise SystemExit("cellseg-tf cv: --manifest is required (or set manifest: in --config)")
    result = run_cv(config, folds=args.folds, out=args.out, resume=args.resume,
                    use_manifest_folds=not args.ignore_fold_column)
    print(result.table.to_string(index=False, columns=[c for c in result.table.columns if c != "model"]))
    for line in format_summary(result.table):
        print(line)
    print(f"summary={result.summary_csv} models={result.out / 'models.txt'}")
    print("ensemble: cellseg-tf predict " + " ".join(f"--model {m}" for m in result.models) + " --input ... --out ...")
    return 0


def _add_train_flags(p) -> None:
    """Flags shared by `train` and `cv`; each maps onto a TrainConfig field (unset flags keep --config/defaults)."""
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
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 disables)")
    p.add_argument("--checkpoint-every-epoch", action="store_true", help="also keep RUN/epochs/epoch_NNN.keras")
    p.add_argument("--tensorboard", action="store_true", help="write RUN/tensorboard/")
    p.add_argument("--freeze-encoder-epochs", type=int, help="epochs with the encoder frozen before fine-tuning")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "tpu", "multiworker"))
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--mask-threshold", type=float, help="mask pixel > this is foreground (127: anti-aliased masks)")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"))
    p.add_argument("--config", help="YAML/JSON TrainConfig; flags override it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any TrainConfig field, VALUE as YAML (repeatable): --set model_options={base_filters: 8}")
    p.add_argument("--seed", type=int)
    p.add_argument("--verbose", type=int)


def cmd_predict(args) -> int:
    from .batch_predict import BatchOptions, expand_model_list, parse_shard, predict_batch
    from .inference import resolve_inputs

    inputs = resolve_inputs(args.input, args.split, exclude=args.out)
    if not inputs:
        print(f"cellseg-tf predict: no images found in {args.input}", file=sys.stderr)
        return 1
    group_weights = {}
    for item in args.group_weight or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--group-weight wants GROUP=W (e.g. z=2), got {item!r}")
        group_weights[name.strip()] = float(value)
    floats = lambda text: [float(v) for v in text.split(",")] if text else None  # noqa: E731
    options = BatchOptions(tiling=args.tiling, vote=args.vote, tta=args.tta, group_weights=group_weights,
                           model_weights=floats(args.model_weights), model_thresholds=floats(args.model_thresholds),
                           save_prob=args.save_prob, instances=args.instances, min_size=args.min_size,
                           overwrite=args.overwrite, shard=parse_shard(args.shard) if args.shard else None,
                           norm_low=args.norm_low, norm_high=args.norm_high, precision=args.precision)
    result = predict_batch(expand_model_list(args.model), inputs, args.out, patch_size=args.patch_size,
                           overlap=args.overlap, threshold=args.threshold, batch_size=args.batch_size or None,
                           progress=not args.no_progress, options=options)
    print(f"predicted={result['done']} skipped={result['skipped']} failed={result['failed']} out={args.out}")
    return 1 if result["failed"] and result["done"] == 0 and result["skipped"] == 0 else 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_folder, summarize
    from .io import open_manifest, write_text_atomic
    from .manifest import select

    report = evaluate_folder(args.pred, select(open_manifest(args.manifest), args.split),
                             mask_threshold=args.mask_threshold)
    write_text_atomic(args.out, report.to_csv(index=False))
    summary = summarize(report)
    for key, value in summary.items():
        if key != "mean_dice":
            print(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    print(f"mean_dice={summary['mean_dice']:.4f}")
    return 0


def cmd_morphometry(args) -> int:
    from .inference import resolve_inputs
    from .morphometry import measure_folder

    images = resolve_inputs(args.input, args.split, exclude=args.pred)
    if not images:
        raise FileNotFoundError(f"{args.input}: no images found")
    cells, per_image, failures = measure_folder(args.pred, images, args.out, pixel_size=args.pixel_size,
                                                min_size=args.min_size)
    for failure in failures:
        print(f"cellseg-tf morphometry: skipped {failure}", file=sys.stderr)
    unit = "px" if args.pixel_size == 1 else "units"
    print(f"images={len(per_image)} cells={len(cells)} failed={len(failures)} "
          f"median_area={cells['area'].median():.1f} ({unit}²) out={args.out}")
    return 0


def cmd_expand(args) -> int:
    from .expand import expand_dataset

    path, failures = expand_dataset(args.manifest, args.out, variants=args.variants, policy=args.policy,
                                    seed=args.seed, channels=args.channels, split=args.split,
                                    include_original=not args.no_original, mask_threshold=args.mask_threshold)
    for file, reason in failures:
        print(f"cellseg-tf expand: skipped {file}: {reason}", file=sys.stderr)
    print(f"manifest={path} failed={len(failures)}")
    return 0


def cmd_stacks(args) -> int:
    from .stacks import find_stacks, stack_manifest

    pairs = find_stacks(args.folder, args.pattern, args.mask_suffix)
    if not pairs:
        raise FileNotFoundError(f"{args.folder}: no files match {args.pattern!r}")
    path = stack_manifest(args.out, pairs, split=args.split, extract_to=args.extract_to)
    print(f"manifest={path} stacks={len(pairs)}")
    return 0


def cmd_manifest(args) -> int:
    from .io import open_manifest
    from .pairing import MASK_SUFFIXES, folder_manifest

    suffixes = tuple(args.mask_suffix) if args.mask_suffix else MASK_SUFFIXES
    path = Path(args.out)
    checking = path.with_name(f".{path.name}.checking")  # same folder: its relative paths stay valid
    try:
        _, pairing = folder_manifest(checking, args.images, args.masks, val_fraction=args.val,
                                     test_fraction=args.test, seed=args.seed, dataset=args.dataset,
                                     modality=args.modality, unlabelled_as_test=args.unlabelled_as_test,
                                     suffixes=suffixes)
        for kind, files in (("image without a mask", pairing.unmatched_images),
                            ("mask without an image", pairing.unmatched_masks)):
            for file in files:
                print(f"cellseg-tf manifest: {kind}: {file}", file=sys.stderr)
        samples = open_manifest(checking)  # reads every header: size mismatches and unreadable files are named here
        os.replace(checking, path)          # an invalid manifest never replaces the one at --out
    finally:
        checking.unlink(missing_ok=True)
    counts = {split: sum(s.split == split for s in samples) for split in ("train", "val", "test")}
    print(f"manifest={path} pairs={len(pairing.pairs)} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellseg-tf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic data -> train -> predict -> evaluate")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model from a manifest")
    _add_train_flags(p)
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last completed epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="k-fold cross-validation: one run per fold + summary.csv + models.txt")
    _add_train_flags(p)
    p.add_argument("--folds", type=int, default=5, help="k (ignored when the manifest has a fold column)")
    p.add_argument("--out", required=True, help="CVDIR: fold_<k>/ runs, folds.csv, summary.csv, models.txt")
    p.add_argument("--resume", action="store_true", help="skip finished folds, continue an interrupted one")
    p.add_argument("--ignore-fold-column", action="store_true", help="seeded k-fold even if the manifest has folds")
    p.set_defaults(func=cmd_cv)

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
    p.add_argument("--tiling", choices=("overlap", "grid"), default="overlap",
                   help="overlap: blended overlapping tiles (no seams); grid: seed 002's non-overlapping patchify grid")
    p.add_argument("--vote", choices=("soft", "hard"), default="soft",
                   help="soft: weighted mean probability > threshold; hard: weighted majority of binarised models")
    p.add_argument("--tta", nargs="?", const="d4", default="none", choices=("none", "flip", "d4"),
                   help="test-time augmentation: flip (4 flips) or d4 (8 flips/rotations; the default of bare --tta)")
    p.add_argument("--group-weight", action="append", metavar="GROUP=W",
                   help="vote weight of every model of a group: z (files named z_*) or standard; default 1")
    p.add_argument("--model-weights", metavar="W1,W2,...", help="extra per-model weights, in --model order")
    p.add_argument("--model-thresholds", metavar="T1,T2,...", help="per-model thresholds for --vote hard")
    p.add_argument("--save-prob", choices=("npy", "tiff"), help="also write OUT/<stem>_prob.npy|.tif (float32)")
    p.add_argument("--instances", action="store_true",
                   help="also write OUT/<stem>_instances.tif (uint16 labels: holes filled, small objects removed)")
    p.add_argument("--min-size", type=int, default=16, help="smallest object kept by --instances, in pixels")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs already exist")
    p.add_argument("--norm-low", type=float, help="normalisation percentile (default: the models' run config, else 2)")
    p.add_argument("--norm-high", type=float, help="normalisation percentile (default: the run config, else 98)")
    p.add_argument("--precision", choices=("auto", "float32", "saved"), default="auto",
                   help="auto: mixed-precision models run in float32 where there is no GPU")
    p.add_argument("--shard", metavar="I/N", help="process only shard I of N (1-based), e.g. one per Colab session")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score predictions against manifest masks")
    p.add_argument("--pred", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--mask-threshold", type=float, default=0,
                   help="truth mask pixel > this is foreground (default 0 keeps instance labels; 127: anti-aliased)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("morphometry", help="per-cell measurements (area, shape, intensity) of predicted masks")
    p.add_argument("--pred", required=True, help="the predict job's OUT folder")
    p.add_argument("--input", required=True, help="the images that were predicted: folder, list file or manifest")
    p.add_argument("--split", default=None, help="manifest split to measure (default: all rows)")
    p.add_argument("--out", required=True, help="cells CSV (one row per cell); <name>_per_image.csv goes beside it")
    p.add_argument("--pixel-size", type=float, default=1.0, help="length of a pixel (e.g. 0.65 for µm); 1 = pixels")
    p.add_argument("--min-size", type=int, default=16, help="objects under this many px are dropped")
    p.set_defaults(func=cmd_morphometry)

    p = sub.add_parser("expand", help="offline expansion: write K augmented variants per pair + a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for images/, masks/ and manifest.csv")
    p.add_argument("--variants", type=int, default=21, help="augmented variants per pair (seed 002: 21)")
    p.add_argument("--policy", default="brightfield_2stage")
    p.add_argument("--split", default="train")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--mask-threshold", type=float, default=0, help="mask pixel > this is foreground (127: anti-aliased)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-original", action="store_true", help="list only the variants, not the original pairs")
    p.set_defaults(func=cmd_expand)

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
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("stacks", help="multi-page TIFF stacks (Stacked_*.tif + *_Mask.tif) -> manifest")
    p.add_argument("--folder", required=True)
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--pattern", default="Stacked_*.tif*")
    p.add_argument("--mask-suffix", default="_Mask")
    p.add_argument("--split", default="train")
    p.add_argument("--extract-to", help="write each frame as its own TIFF here instead of addressing stack.tif#k")
    p.set_defaults(func=cmd_stacks)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_tf()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"cellseg-tf {args.command}: error: {exc}", file=sys.stderr)
        return 2
