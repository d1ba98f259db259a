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
    from .demo import QUICK, run_demo

    sizes = dict(QUICK) if args.quick else {"n_images": args.n_images, "epochs": args.epochs}
    summary = run_demo(args.out, seed=args.seed, verbose=args.verbose, **sizes)
    print(json.dumps(summary, indent=2))
    print(f"dice={summary['dice']:.4f} n_test={summary['n_test']} train_seconds={summary['train_seconds']}")
    return 0


def _train_config(args):
    """TrainConfig from --config (or defaults), then the explicit flags, then --set KEY=VALUE overrides."""
    from .training.config import TrainConfig

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
    from .training.engine import train

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
          f"stop_reason={result.stop_reason} target={result.target}")
    if result.target != "binary" and not args.no_tune:
        _tune(result.run_dir, verbose=config.verbose)
    return 0


def _tune(run, verbose: int = 1) -> None:
    """Grid-search the cell post-processing on RUN's validation images; writes RUN/instances.yaml (+ grid CSV)."""
    from .predict.tuning import tune_run

    result = tune_run(run, progress=bool(verbose))
    p = result.params
    print(f"instances={Path(run) / 'instances.yaml'} val_instance_f1={result.f1:.4f} n_val={result.n_images} "
          f"fg_threshold={p.fg_threshold} seed_threshold={p.seed_threshold} min_size={p.min_size}")


def cmd_tune(args) -> int:
    _quiet_tf()
    _tune(args.run, verbose=0 if args.quiet else 1)
    return 0


def cmd_cv(args) -> int:
    from .training.crossval import format_summary, run_cv

    config = _train_config(args)
    if not config.manifest:
        raise SystemExit("cellseg-tf cv: --manifest is required (or set manifest: in --config)")
    if args.quiet and args.verbose is None:
        config.verbose = 0
    result = run_cv(config, folds=args.folds, out=args.out, resume=args.resume,
                    use_manifest_folds=not args.ignore_fold_column, verbose=not args.quiet)
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
    from .data.io import expand_model_list, resolve_inputs
    from .predict.batch_predict import parse_shard, predict_batch
    from .predict.options import BatchOptions

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
    options = BatchOptions(patch_size=args.patch_size, overlap=args.overlap, threshold=args.threshold,
                           batch_size=args.batch_size or None, tiling=args.tiling, vote=args.vote, tta=args.tta,
                           group_weights=group_weights, model_weights=floats(args.model_weights),
                           model_thresholds=floats(args.model_thresholds), save_prob=args.save_prob,
                           instances=args.instances, min_size=args.min_size, fg_threshold=args.fg_threshold,
                           seed_threshold=args.seed_threshold, overwrite=args.overwrite,
                           shard=parse_shard(args.shard) if args.shard else None, norm_low=args.norm_low,
                           norm_high=args.norm_high, precision=args.precision, progress=not args.no_progress)
    result = predict_batch(inputs, expand_model_list(args.model), args.out, options)
    print(f"predicted={result['done']} skipped={result['skipped']} failed={result['failed']} out={args.out}")
    return 1 if result["failed"] and result["done"] == 0 and result["skipped"] == 0 else 0


def cmd_evaluate(args) -> int:
    from .analysis.evaluation import evaluate_folder, summarize
    from .common.files import write_text_atomic
    from .data.io import open_manifest
    from .data.manifest import select

    report = evaluate_folder(args.pred, select(open_manifest(args.manifest), args.split),
                             mask_threshold=args.mask_threshold, verbose=not args.quiet)
    write_text_atomic(args.out, report.to_csv(index=False))
    summary = summarize(report)
    for key, value in summary.items():
        if key not in ("mean_dice", "instance_f1"):
            print(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    last = f"mean_dice={summary['mean_dice']:.4f}"
    if "instance_f1" in summary:  # cells matched at IoU 0.5, TP/FP/FN summed over the images
        last += f" instance_f1={summary['instance_f1']:.4f}"
    print(last)
    return 0


def cmd_compare(args) -> int:
    from .analysis.statistics import compare_reports, write_comparison

    result = compare_reports(args.a, args.b, metric=args.metric, threshold=args.threshold, level=args.level)
    summary_csv, per_image_csv = write_comparison(result, args.out)
    s = result.summary
    print(f"a={args.a} mean={s['mean_a']:.4f}  b={args.b} mean={s['mean_b']:.4f}  dropped={s['dropped']}")
    print(f"mean_diff {int(s['level'] * 100)}% CI=[{s['diff_ci_low']:.4g}, {s['diff_ci_high']:.4g}] df={s['df']}")
    for side in ("a", "b"):
        print(f"{side}: {s[f'{side}_meets']}/{s['n']} images {'>=' if s['higher_is_better'] else '<='} "
              f"{s['threshold']:g}; share {s[f'{side}_share']:.3f} "
              f"[{s[f'{side}_share_low']:.3f}, {s[f'{side}_share_high']:.3f}]")
    print(f"saved={summary_csv} per_image={per_image_csv}")
    print(result.line())
    return 0


def cmd_adapt(args) -> int:
    from .fewshot import AdaptConfig, adapt
    from .predict.options import DEFAULT_NORM

    config = AdaptConfig(extractors=args.extractor, support=args.support, out=args.out, shots=args.shots,
                         seed=args.seed, mask_threshold=args.mask_threshold, verbose=0 if args.quiet else 1)
    if args.max_pixels:
        config.max_pixels = args.max_pixels
    result = adapt(config)
    report, dice = result.report, result.report["support_dice"]
    print(f"adapted={result.model_path} report={result.report_path} shots={report['shots']} "
          f"lambda={report['lambda']:g} support_dice_logistic={dice['logistic']:.4f} "
          f"support_dice_bfgs={dice['bfgs']:.4f} chosen={report['chosen']} seconds={report['seconds']['total']:.1f}")
    norm = (report["norm_low"], report["norm_high"])
    if norm != tuple(DEFAULT_NORM):
        print(f"note: the extractors normalise with percentiles {norm[0]:g}/{norm[1]:g}; predict the adapted model "
              f"with --norm-low {norm[0]:g} --norm-high {norm[1]:g}")
    return 0


def cmd_morphometry(args) -> int:
    from .data.io import resolve_inputs
    from .analysis.morphometry import measure_folder

    images = resolve_inputs(args.input, args.split, exclude=args.pred)
    if not images:
        raise FileNotFoundError(f"{args.input}: no images found")
    cells, per_image, failures = measure_folder(args.pred, images, args.out, pixel_size=args.pixel_size,
                                                min_size=args.min_size, verbose=not args.quiet)
    for failure in failures:
        print(f"cellseg-tf morphometry: skipped {failure}", file=sys.stderr)
    unit = "px" if args.pixel_size == 1 else "units"
    print(f"images={len(per_image)} cells={len(cells)} failed={len(failures)} "
          f"median_area={cells['area'].median():.1f} ({unit}²) out={args.out}")
    return 0


def cmd_expand(args) -> int:
    from .data.expand import expand_dataset

    path, failures = expand_dataset(args.manifest, args.out, variants=args.variants, policy=args.policy,
                                    seed=args.seed, channels=args.channels, split=args.split,
                                    include_original=not args.no_original, mask_threshold=args.mask_threshold,
                                    verbose=not args.quiet)
    for file, reason in failures:
        print(f"cellseg-tf expand: skipped {file}: {reason}", file=sys.stderr)
    print(f"manifest={path} failed={len(failures)}")
    return 0


def cmd_patches(args) -> int:
    from .data.patches import export_patches

    result = export_patches(args.manifest, args.out, size=args.size, step=args.step,
                            split=None if args.split == "all" else args.split, verbose=not args.quiet)
    for file, reason in result.failures:
        print(f"cellseg-tf patches: skipped {file}: {reason}", file=sys.stderr)
    print(f"manifest={result.manifest} tiles={result.tiles} images={result.images} failed={len(result.failures)}")
    return 0


def cmd_stacks(args) -> int:
    from .data.stacks import find_stacks, stack_manifest

    pairs = find_stacks(args.folder, args.pattern, args.mask_suffix)
    if not pairs:
        raise FileNotFoundError(f"{args.folder}: no files match {args.pattern!r}")
    path = stack_manifest(args.out, pairs, split=args.split, extract_to=args.extract_to)
    print(f"manifest={path} stacks={len(pairs)}")
    return 0


def cmd_manifest(args) -> int:
    from .common.files import atomic_path
    from .data.io import open_manifest
    from .data.pairing import MASK_SUFFIXES, folder_manifest

    suffixes = tuple(args.mask_suffix) if args.mask_suffix else MASK_SUFFIXES
    path = Path(args.out)
    # Written beside --out (so its relative paths stay valid) and checked there; only a valid manifest replaces --out.
    with atomic_path(path) as checking:
        _, pairing = folder_manifest(checking, args.images, args.masks, val_fraction=args.val,
                                     test_fraction=args.test, seed=args.seed, dataset=args.dataset,
                                     modality=args.modality, unlabelled_as_test=args.unlabelled_as_test,
                                     suffixes=suffixes, verbose=not args.quiet)
        for kind, files in (("image without a mask", pairing.unmatched_images),
                            ("mask without an image", pairing.unmatched_masks)):
            for file in files:
                print(f"cellseg-tf manifest: {kind}: {file}", file=sys.stderr)
        samples = open_manifest(checking)  # reads every header: size mismatches and unreadable files are named here
    counts = {split: sum(s.split == split for s in samples) for split in ("train", "val", "test")}
    print(f"manifest={path} pairs={len(pairing.pairs)} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellseg-tf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic data -> train -> predict -> evaluate")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="a tiny run (6 images of 64 px, 1 epoch of 2 steps) that only checks the install works")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model from a manifest")
    _add_train_flags(p)
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last completed epoch")
    p.add_argument("--no-tune", action="store_true",
                   help="skip tuning the cell post-processing on the validation images (instance targets only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="tune a run's cell post-processing on its validation images -> instances.yaml")
    p.add_argument("run", help="a training run folder (best.keras, config.yaml)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("cv", help="k-fold cross-validation: one run per fold + summary.csv + models.txt")
    _add_train_flags(p)
    p.add_argument("--folds", type=int, default=5, help="k (ignored when the manifest has a fold column)")
    p.add_argument("--out", required=True, help="CVDIR: fold_<k>/ runs, folds.csv, summary.csv, models.txt")
    p.add_argument("--resume", action="store_true", help="skip finished folds, continue an interrupted one")
    p.add_argument("--ignore-fold-column", action="store_true", help="seeded k-fold even if the manifest has folds")
    _add_quiet(p)
    p.set_defaults(func=cmd_cv)

    from .predict.options import PRECISIONS, PROB_FORMATS, TILINGS, TTA_MODES, VOTES

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
    p.add_argument("--tta", nargs="?", const="d4", default="none", choices=tuple(TTA_MODES),
                   help="test-time augmentation: flip (4 flips) or d4 (8 flips/rotations; the default of bare --tta)")
    p.add_argument("--group-weight", action="append", metavar="GROUP=W",
                   help="vote weight of every model of a group: z (files named z_*) or standard; default 1")
    p.add_argument("--model-weights", metavar="W1,W2,...", help="extra per-model weights, in --model order")
    p.add_argument("--model-thresholds", metavar="T1,T2,...", help="per-model thresholds for --vote hard")
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
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs already exist")
    p.add_argument("--norm-low", type=float, help="normalisation percentile (default: the models' run config, else 2)")
    p.add_argument("--norm-high", type=float, help="normalisation percentile (default: the run config, else 98)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
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
    _add_quiet(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="paired statistics of two evaluate reports of the same images (B vs A)")
    p.add_argument("a", help="report CSV of the reference (cellseg-tf evaluate --out)")
    p.add_argument("b", help="report CSV of the candidate; wins count images where B is better")
    p.add_argument("--metric", default="dice", help="report column to compare (hausdorff*: smaller is better)")
    p.add_argument("--threshold", type=float, default=0.75,
                   help="Beta credible interval of the share of images whose score meets this")
    p.add_argument("--level", type=float, default=0.95, help="confidence / credible level")
    p.add_argument("--out", default="compare.csv", help="summary CSV; <name>_per_image.csv goes beside it")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("adapt", help="few-shot: recombine frozen models' features for a new structure from K images")
    p.add_argument("--extractor", action="append", required=True,
                   help="a trained .keras model whose features are used (repeat to concatenate several)")
    p.add_argument("--support", required=True, help="manifest whose split=train rows are the support set")
    p.add_argument("--shots", type=int, help="K support images drawn with --seed (default: all train rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="adapted .keras model; <stem>_adaptation.yaml goes beside it")
    p.add_argument("--max-pixels", type=int, help="cap on sampled support pixels (default 40000)")
    p.add_argument("--mask-threshold", type=float, default=0, help="mask pixel > this is foreground")
    _add_quiet(p)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("morphometry", help="per-cell measurements (area, shape, intensity) of predicted masks")
    p.add_argument("--pred", required=True, help="the predict job's OUT folder")
    p.add_argument("--input", required=True, help="the images that were predicted: folder, list file or manifest")
    p.add_argument("--split", default=None, help="manifest split to measure (default: all rows)")
    p.add_argument("--out", required=True, help="cells CSV (one row per cell); <name>_per_image.csv goes beside it")
    p.add_argument("--pixel-size", type=float, default=1.0, help="length of a pixel (e.g. 0.65 for µm); 1 = pixels")
    p.add_argument("--min-size", type=int, default=16, help="objects under this many px are dropped")
    _add_quiet(p)
    p.set_defaults(func=cmd_morphometry)

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
    _add_quiet(p)
    p.set_defaults(func=cmd_expand)

    from .data.manifest import SPLITS

    p = sub.add_parser("patches", help="offline patching: cut manifest pairs into fixed-size tiles + a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for images/, masks/ and manifest.csv (the tiles)")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    p.add_argument("--step", type=int, help="pixels between tile origins (default: --size; smaller overlaps tiles)")
    p.add_argument("--split", default="train", choices=SPLITS + ("all",), help="manifest rows to cut (all: every row)")
    _add_quiet(p)
    p.set_defaults(func=cmd_patches)

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
    _add_quiet(p)
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
