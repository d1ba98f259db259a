"""Validation-only screen of few-shot adaptation settings, on the extractors of an earlier `bench_fewshot.py` run.

For every target set T, the extractors are those bench_fewshot would use (the other sets' MSDs in BENCH/extractors
and the other sets' full-training U-Nets in BENCH/full); for `--seeds` seeded draws of K support images each
`--config` (AdaptConfig overrides; the first one is the reference) is adapted and scored on `--val-rows` train rows
outside the support set. The test split is never predicted: this is where a default may be chosen. Per config it
prints the mean validation Dice and adaptation seconds per target and overall, and the draws at or above the first
config; rows go to OUT/screen.csv. `--solutions` also scores each adaptation's logistic and BFGS weights on their
own (columns val_logistic, val_bfgs), to judge which of the two the adaptation kept.

    python benchmarks/screen_fewshot.py --bench /tmp/fs6 --out /tmp/screen --config default: \
        --config tiles8:max_tiles=8 --config small:max_tiles=4,max_pixels=20000,lambdas=[1e-4,1e-3,1e-2]

A config is NAME:KEY=VALUE,KEY=VALUE (VALUE parsed as YAML; a comma splits only before the next KEY=); NAME: alone
is the package defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fewshot import ROOT, datasets, held_out_rows, target_extractors, test_dice  # noqa: E402
from bench_real import parse_candidate  # noqa: E402
from cellseg_tf.common.files import atomic_path, write_text_atomic  # noqa: E402
from cellseg_tf.data.io import open_manifest  # noqa: E402
from cellseg_tf.data.manifest import select  # noqa: E402
from cellseg_tf.fewshot import AdaptConfig, adapt  # noqa: E402
from cellseg_tf.fewshot.support import draw_support  # noqa: E402

FIXED = {"extractors", "support", "out", "shots", "seed", "verbose"}   # set by the screen itself


def _numbers(value):
    """YAML 1.1 reads a float without a dot (1e-4) as a string: such strings become floats, inside lists too."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def adapt_overrides(assignments: list[str]) -> dict:
    """["KEY=VALUE", ...] -> {field: value} of AdaptConfig (VALUE as YAML); an unknown or fixed key is an error."""
    fields = {f.name for f in dataclasses.fields(AdaptConfig)} - FIXED
    out = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"bad setting {text!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        out[key] = _numbers(yaml.safe_load(value))
    return out


def summarize(frame: pd.DataFrame, reference: str) -> list[str]:
    """One line per config: mean validation Dice and seconds, per target and overall, draws >= the reference."""
    wide = frame.pivot_table(index=["target", "seed"], columns="config", values="val_dice")
    lines = []
    for name, g in frame.groupby("config", sort=False):
        per_target = " ".join(f"{t}={v:.4f}" for t, v in g.groupby("target")["val_dice"].mean().items())
        at_least = int((wide[name] >= wide[reference]).sum())
        lines.append(f"config={name} mean_val_dice={g['val_dice'].mean():.4f} mean_seconds={g['seconds'].mean():.1f} "
                     f"median_seconds={g['seconds'].median():.1f} draws_ge_{reference}={at_least}/{len(wide)} "
                     f"{per_target}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True, help="a bench_fewshot.py --out folder (extractors/, full/)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    ap.add_argument("--targets", help="comma-separated targets (default: every set with train and test rows)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--val-rows", type=int, default=3)
    ap.add_argument("--solutions", action="store_true",
                    help="also score each adaptation's logistic and BFGS weights on their own (val_logistic, "
                         "val_bfgs): how well the kept one was chosen")
    args = ap.parse_args(argv)

    configs = [(name, adapt_overrides(a)) for name, a in (parse_candidate(c) for c in args.config)]
    names = [n for n, _ in configs]
    if len(set(names)) != len(names):
        ap.error(f"config names repeat: {names}")
    bench, out, sets = Path(args.bench), Path(args.out), datasets(Path(args.data))
    splits = {n: open_manifest(m) for n, m in sets.items()}
    full = {n for n in sets if (bench / "full" / n / "best.keras").is_file()}
    targets = args.targets.split(",") if args.targets else [n for n in sets if select(splits[n], "train")
                                                           and select(splits[n], "test")]
    rows = []
    for target in targets:
        if target not in sets:
            ap.error(f"unknown target {target!r}; sets: {', '.join(sets)}")
        msds, unets = target_extractors({s: bench / "extractors" / s / "best.keras" for s in sets},
                                        {s: bench / "full" / s / "best.keras" for s in full}, target)
        ext = msds + unets
        missing = [p for p in ext if not Path(p).is_file()]
        if missing:
            raise SystemExit(f"{bench}: missing extractors for target {target}: {', '.join(missing)}")
        train_rows = select(splits[target], "train")
        for seed in range(args.seeds):
            support, _ = draw_support(sets[target], args.shots, seed)      # the rows adapt() draws
            held = held_out_rows(train_rows, support, args.val_rows, seed)
            if not held:
                raise SystemExit(f"{target}: no train rows outside the support set to validate on")
            for name, overrides in configs:
                path = out / target / f"k{args.shots}_s{seed}_{name}.keras"
                r = adapt(AdaptConfig(extractors=ext, support=str(sets[target]), shots=args.shots, seed=seed,
                                      out=str(path), verbose=0, **overrides))
                val = test_dice(path, held, out / "pred" / target / path.stem)
                sec = r.report["seconds"]
                rows.append({"target": target, "seed": seed, "config": name, "val_dice": val, **sec,
                             "seconds": sec["total"], "chosen": r.report["chosen"], "lambda": r.report["lambda"]})
                line = f"{target} seed={seed} {name}: val {val:.4f} (kept {r.report['chosen']})"
                if args.solutions:        # the same adaptation's logistic and BFGS weights, each on its own
                    kept = r.report["chosen"]                       # ... the kept one is the model just scored
                    other = "logistic" if kept == "bfgs" else "bfgs"
                    alt = out / target / f"{path.stem}_{other}.keras"
                    with atomic_path(alt) as tmp:
                        r.model_with(other).save(tmp)
                    rows[-1][f"val_{kept}"] = val
                    rows[-1][f"val_{other}"] = test_dice(alt, held, out / "pred" / target / alt.stem)
                    line += f" {other} {rows[-1][f'val_{other}']:.4f}"
                print(f"{line} [{sec['total']:.1f} s: load {sec['load']:.1f}, features {sec['features']:.1f}, "
                      f"solve {sec['solve']:.1f}]", flush=True)
    frame = pd.DataFrame(rows)
    write_text_atomic(out / "screen.csv", frame.to_csv(index=False))
    with pd.option_context("display.width", 200):
        print(frame.groupby(["target", "config"], sort=False)[["val_dice", "seconds", "load", "features", "solve"]]
              .mean().round(4).to_string())
    for line in summarize(frame, names[0]):
        print(line)
    if args.solutions:
        for name, g in frame.groupby("config", sort=False):
            print(f"config={name} kept_vs_solutions mean_val kept={g['val_dice'].mean():.4f} "
                  f"logistic={g['val_logistic'].mean():.4f} bfgs={g['val_bfgs'].mean():.4f} "
                  f"kept>=logistic={int((g['val_dice'] >= g['val_logistic'] - 1e-9).sum())}/{len(g)} "
                  f"bfgs>=logistic={int((g['val_bfgs'] >= g['val_logistic'] - 1e-9).sum())}/{len(g)} "
                  f"logistic_kept={int((g['chosen'] == 'logistic').sum())}")
    return 0 if np.isfinite(frame["val_dice"]).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
