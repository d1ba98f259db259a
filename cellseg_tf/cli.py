"""`cellseg-tf` command line: a thin layer mapping flags onto package calls (demo, train, predict, evaluate).

The flags are defined in `cli_args`; each `cmd_*` here is a call into the package plus printing (`COMMANDS`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import cli_args


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
             "freeze_encoder_epochs": args.freeze_encoder_epochs, "ema_momentum": args.ema_momentum,
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


def _tune(run, verbose: int = 1, objective: str | None = None) -> None:
    """Grid-search the cell post-processing on RUN's validation images; writes RUN/instances.yaml (+ grid CSV)."""
    from .predict.tuning import DEFAULT_OBJECTIVE, tune_run

    result = tune_run(run, progress=bool(verbose), objective=objective or DEFAULT_OBJECTIVE)
    p = result.params
    print(f"instances={Path(run) / 'instances.yaml'} val_instance_f1={result.f1:.4f} val_pq={result.pq:.4f} "
          f"objective={result.objective} n_val={result.n_images} "
          f"fg_threshold={p.fg_threshold} seed_threshold={p.seed_threshold} seed_h={p.seed_h} "
          f"merge_threshold={p.merge_threshold} "
          f"small_fraction={p.small_fraction} min_size={p.min_size} tta={result.tta}")


def cmd_tune(args) -> int:
    _quiet_tf()
    _tune(args.run, verbose=0 if args.quiet else 1, objective=args.objective)
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
    options = BatchOptions(patch_size=args.patch_size, overlap=args.overlap, threshold=args.threshold,
                           batch_size=args.batch_size or None, tiling=args.tiling, vote=args.vote, tta=args.tta,
                           group_weights=group_weights, model_weights=args.model_weights or None,
                           model_thresholds=args.model_thresholds or None, save_prob=args.save_prob,
                           instances=args.instances, min_size=args.min_size, fg_threshold=args.fg_threshold,
                           seed_threshold=args.seed_threshold, seed_h=args.seed_h,
                           merge_threshold=args.merge_threshold,
                           small_fraction=args.small_fraction, overwrite=args.overwrite,
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

    config = AdaptConfig(extractors=args.extractor, support=args.support, out=args.out, shots=args.shots,
                         seed=args.seed, mask_threshold=args.mask_threshold, verbose=0 if args.quiet else 1)
    if args.max_pixels:
        config.max_pixels = args.max_pixels
    if args.filter_sigmas is not None:
        config.filter_sigmas = args.filter_sigmas
    if args.feature_levels is not None:
        config.feature_levels = args.feature_levels
    if args.dice_average:
        config.dice_average = args.dice_average
    if args.dice_anchor:
        config.dice_anchor = args.dice_anchor
    result = adapt(config)
    report, dice = result.report, result.report["support_dice"]
    print(f"adapted={result.model_path} report={result.report_path} shots={report['shots']} "
          f"lambda={report['lambda']:g} support_dice_logistic={dice['logistic']:.4f} "
          f"support_dice_bfgs={dice['bfgs']:.4f} chosen={report['chosen']} seconds={report['seconds']['total']:.1f}")
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


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "tune": cmd_tune, "cv": cmd_cv, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "compare": cmd_compare, "adapt": cmd_adapt, "morphometry": cmd_morphometry,
            "expand": cmd_expand, "patches": cmd_patches, "manifest": cmd_manifest, "stacks": cmd_stacks}


def build_parser() -> argparse.ArgumentParser:
    """The parser of `cli_args` with each command's handler (`args.func`)."""
    return cli_args.build_parser(COMMANDS)


def main(argv: list[str] | None = None) -> int:
    _quiet_tf()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"cellseg-tf {args.command}: error: {exc}", file=sys.stderr)
        return 2
