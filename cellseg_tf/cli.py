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


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .training import train

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    flags = {"manifest": args.manifest, "out": args.out, "model": args.model, "loss": args.loss, "epochs": args.epochs,
             "patch_size": args.patch_size, "batch_size": args.batch_size, "seed": args.seed,
             "augmentation": args.augmentation, "learning_rate": args.lr, "channels": args.channels,
             "steps_per_epoch": args.steps_per_epoch, "time_budget_s": args.time_budget,
             "mixed_precision": args.mixed_precision, "verbose": args.verbose}
    for key, value in flags.items():
        if value is not None:
            setattr(config, key, value)
    if not config.manifest:
        raise SystemExit("cellseg-tf train: --manifest is required (or set manifest: in --config)")
    result = train(config)
    print(f"best_model={result.best_model} best_val_dice={result.best_val_dice:.4f} "
          f"train_seconds={result.train_seconds:.1f}")
    return 0


def cmd_predict(args) -> int:
    from .inference import predict_batch, resolve_inputs

    inputs = resolve_inputs(args.input, args.split)
    if not inputs:
        print(f"cellseg-tf predict: no images found in {args.input}", file=sys.stderr)
        return 1
    result = predict_batch(args.model, inputs, args.out, patch_size=args.patch_size, overlap=args.overlap,
                           threshold=args.threshold, batch_size=args.batch_size, progress=not args.no_progress)
    print(f"predicted={result['done']} failed={result['failed']} out={args.out}")
    return 1 if result["done"] == 0 else 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_folder, summarize
    from .io import open_manifest
    from .manifest import select

    report = evaluate_folder(args.pred, select(open_manifest(args.manifest), args.split))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.to_csv(out, index=False)
    summary = summarize(report)
    for key, value in summary.items():
        if key != "mean_dice":
            print(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    print(f"mean_dice={summary['mean_dice']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellseg-tf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic data -> train -> predict -> evaluate")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model from a manifest")
    p.add_argument("--manifest")
    p.add_argument("--out")
    p.add_argument("--model")
    p.add_argument("--loss")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--augmentation")
    p.add_argument("--lr", type=float)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"))
    p.add_argument("--config", help="YAML/JSON TrainConfig; flags override it")
    p.add_argument("--seed", type=int)
    p.add_argument("--verbose", type=int)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="tiled (ensemble) prediction over a folder, list file or manifest")
    p.add_argument("--model", action="append", required=True, help="a .keras file; repeat for an ensemble")
    p.add_argument("--input", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score predictions against manifest masks")
    p.add_argument("--pred", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_tf()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"cellseg-tf {args.command}: error: {exc}", file=sys.stderr)
        return 2
