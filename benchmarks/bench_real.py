"""Real-data benchmark that chooses training defaults: equal wall-clock arms on every visible data set, picked on
validation, tested once.

Usage: python benchmarks/bench_real.py --minutes M [--sets isbi2012_em,usiigaci_phase,dsb2018_fluo,stardist_dsb_sample]
       [--candidate NAME:KEY=VALUE,KEY=VALUE]... [--out runs/bench_real] [--data ../shared/data] [--seed 0]
       [--set KEY=VALUE]... [--skip-plain]

Arms, per set, each trained for the same `--minutes` of wall clock, one after another in one run:
  plain      the yardstick: a plain Keras U-Net (benchmarks/bench_train.py: `plain_unet`, base 16, BN, bilinear up,
             BCE + Dice `plain_bce_dice`, flips/rot90 random patches `plain_patches`, Adam 1e-3, train_on_batch),
             patch/batch = TrainConfig's (128 / 16), predicted by `Predictor([model], PredictOptions(patch_size=...))`
             at threshold 0.5 (no validation, no checkpoint choice);
  defaults   `training.engine.train(TrainConfig(manifest, out, time_budget_s, seed))`, every other field at its
             default, predicted by `Predictor.from_files([best.keras])` with default options;
  NAME       each `--candidate NAME:KEY=VALUE,...`: the same with `TrainConfig.override([...])`.
`--set KEY=VALUE` overrides apply to every arm (the plain arm takes patch_size, batch_size, channels, norm_low/high
and model_options base_filters/depth from them): they shrink runs for tests and smoke runs, not for real benchmarks.

Splits: `bench_instances.prepare_splits` (train / val = the manifest's val rows or the engine's own held-out share /
test); all arms of a set share them. A set without test rows (stardist_dsb_sample) is a sanity case: test = train.
Scores: every arm predicts the val and the test images; per image pixel Dice and boundary Dice from
`analysis.evaluation.image_scores` (foreground = channel 0 of the maps > 0.5), written as evaluate-style CSVs
(OUT/<set>/<arm>/{val,test}_scores.csv, `cellseg-tf compare` reads them).

The rule: choose on validation, test once. `pick_arm` ranks arms by the mean over sets of their per-set mean val
Dice (sets whose val images are training images are left out while any other set remains). Test scores are only
reported, with paired statistics (`analysis.statistics.compare_reports`, metric dice) of every arm against plain
and against defaults. Output: OUT/results.json, a table, one `set=... arm=...` line per set × arm and finally
`picked=<arm> mean_val_dice=<v> minutes=<M>`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellseg_tf.analysis.evaluation import image_scores  # noqa: E402
from cellseg_tf.analysis.statistics import compare_reports, write_comparison  # noqa: E402
from cellseg_tf.common.files import write_text_atomic  # noqa: E402
from cellseg_tf.data.io import read_mask  # noqa: E402
from cellseg_tf.data.manifest import Sample  # noqa: E402
from cellseg_tf.training.config import TrainConfig  # noqa: E402

SETS = ("isbi2012_em", "usiigaci_phase", "dsb2018_fluo", "stardist_dsb_sample")
REFERENCES = ("plain", "defaults")
ROW_KEYS = ("val_dice", "test_dice", "test_boundary_dice", "patches", "train_s")


def load_benchmark(name: str):
    """Import benchmarks/<name>.py as a module (the benchmarks folder is not a package)."""
    key = f"_bench_real_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module       # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


def parse_candidate(text: str) -> tuple[str, list[str]]:
    """"NAME:KEY=VALUE,KEY=VALUE" -> (NAME, ["KEY=VALUE", ...]). A comma splits only before the next `KEY=`, so
    YAML values keep theirs (`model_options={base_filters: 8, depth: 3}`); `;` separates too."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in REFERENCES:
        raise ValueError(f"--candidate {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...] with a NAME other than "
                         f"{' / '.join(REFERENCES)}")
    parts = re.split(r"[,;](?=\s*[A-Za-z_][\w-]*\s*=)", rest)
    return name, [p.strip() for p in parts if p.strip()]


# ------------------------------------------------------------------------------------------------ scoring
def score_images(samples: list[Sample], foreground, out_csv: Path) -> dict[str, float]:
    """Per-image pixel + boundary scores (evaluate-style CSV at out_csv, one row per image) -> their means.

    foreground(sample) -> (H, W) bool predicted mask; truth = the sample's mask > 0.
    """
    import pandas as pd

    rows = []
    for s in samples:
        scores = image_scores(foreground(s), read_mask(s.mask), groups=("pixel", "boundary"))
        rows.append({"image": s.image, **scores})
    report = pd.DataFrame(rows)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_csv, report.to_csv(index=False))
    return {"dice": float(report["dice"].mean()), "boundary_dice": float(report["boundary_dice"].mean()),
            "n": len(report)}


def predictor_foreground(predictor):
    """sample -> (H, W) bool: the Predictor's maps of the image file, channel 0 > its threshold (0.5)."""
    def foreground(s: Sample) -> np.ndarray:
        maps, _ = predictor.predict_file(s.image)
        return predictor.binarize(maps)
    return foreground


def score_arm(row: dict, predictor, splits, out: Path) -> dict:
    """Predict and score the val and test images of `splits` into `row` (val_/test_ dice and boundary_dice)."""
    t0 = time.perf_counter()
    for split, samples in (("val", splits.val), ("test", splits.test)):
        csv = out / f"{split}_scores.csv"
        scores = score_images(samples, predictor_foreground(predictor), csv)
        row.update({f"{split}_dice": scores["dice"], f"{split}_boundary_dice": scores["boundary_dice"],
                    f"{split}_csv": str(csv)})
    row["predict_s"] = time.perf_counter() - t0
    return row


# ------------------------------------------------------------------------------------------------ arms
def run_plain(splits, base: TrainConfig, seconds: float, out: Path, seed: int = 0) -> dict:
    """The yardstick U-Net of bench_train.py trained for `seconds` on the train images, then scored."""
    import keras

    from cellseg_tf.data.dataset import load_pairs
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.options import PredictOptions

    bt = load_benchmark("bench_train")
    start = time.perf_counter()          # train_s spans loading and building too, like the package's train() call
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    patch, batch = base.patch_size, base.batch_size
    pairs = load_pairs(splits.train, base.channels, base.norm_low, base.norm_high, base.mask_threshold)
    small = [p.name for p in pairs if min(p.mask.shape) < patch]
    if small:
        raise ValueError(f"{splits.name}: image {small[0]} is smaller than the plain arm's {patch} px patch")
    opts = base.model_options
    model = bt.plain_unet(patch, base.channels, opts.get("base_filters", 16), opts.get("depth", 4))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=bt.plain_bce_dice)
    steps, t0 = 0, time.perf_counter()   # the budget, like the engine's TimeBudget, starts with training
    while time.perf_counter() - t0 < seconds:
        model.train_on_batch(*bt.plain_patches(pairs, patch, batch, rng))
        steps += 1
    row = {"set": splits.name, "arm": "plain", "patches": steps * batch, "train_s": time.perf_counter() - start,
           "note": f"patch {patch}, batch {batch}"}
    predictor = Predictor([model], PredictOptions(patch_size=patch, norm_low=base.norm_low,
                                                  norm_high=base.norm_high))
    return score_arm(row, predictor, splits, out)


def run_package(arm: str, splits, overrides: list[str], seconds: float, out: Path, seed: int = 0) -> dict:
    """`train(TrainConfig(...).override(overrides))` for `seconds`, then best.keras scored with default options."""
    import keras

    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.training.engine import train

    keras.backend.clear_session()
    config = TrainConfig(manifest=str(splits.train_csv), out=str(out / "run"), time_budget_s=seconds, seed=seed,
                         verbose=2)
    config.override(overrides)
    counter = load_benchmark("bench_instances")._batch_counter()
    t0 = time.perf_counter()
    result = train(config, callbacks=[counter])
    row = {"set": splits.name, "arm": arm, "patches": counter.batches * config.batch_size,
           "train_s": time.perf_counter() - t0, "overrides": list(overrides),
           "note": f"target {result.target}, stop {result.stop_reason}, best val Dice {result.best_val_dice:.4f}"}
    return score_arm(row, Predictor.from_files([result.best_model]), splits, out)


# ------------------------------------------------------------------------------------------------ choosing
def pick_arm(results: list[dict], skip_sets=()) -> dict:
    """Choose on validation only: per arm the mean over sets of its per-set val Dice, best first.

    results: rows with set, arm, val_dice (test keys are ignored). skip_sets: sets whose val images are training
    images, left out unless no other set has val scores. Returns {"picked", "mean_val_dice": {arm: v},
    "beats_defaults": {arm: sets where its val Dice > defaults'}, "sets": [sets used]}.
    """
    usable = [r for r in results if not math.isnan(float(r.get("val_dice", math.nan)))]
    honest = [r for r in usable if r["set"] not in set(skip_sets)]
    rows = honest or usable
    sets = sorted({r["set"] for r in rows})
    val = {(r["set"], r["arm"]): float(r["val_dice"]) for r in rows}
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    means = {a: float(np.mean([val[s, a] for s in sets if (s, a) in val])) for a in arms}
    beats = {a: sum(1 for s in sets if (s, a) in val and (s, "defaults") in val and val[s, a] > val[s, "defaults"])
             for a in arms}
    picked = max(arms, key=lambda a: (means[a], beats[a])) if arms else None
    return {"picked": picked, "mean_val_dice": means, "beats_defaults": beats, "sets": sets,
            "val_is_train_only": not honest and bool(usable)}


def significance(results: list[dict], out: Path) -> list[dict]:
    """Paired test-split statistics of every arm (B) against plain and against defaults (A) of the same set
    (plain against defaults once: as defaults vs plain)."""
    rows = []
    by = {(r["set"], r["arm"]): r for r in results}
    for (name, arm), r in by.items():
        for ref in REFERENCES:
            if arm == "plain" or ref == arm or (name, ref) not in by:
                continue
            entry = {"set": name, "arm": arm, "reference": ref}
            try:
                comp = compare_reports(by[name, ref]["test_csv"], r["test_csv"], metric="dice")
                write_comparison(comp, out / name / "compare" / f"{arm}_vs_{ref}.csv")
                entry.update({k: comp.summary[k] for k in ("n", "mean_diff", "t", "p", "cohens_d", "wins", "ties",
                                                           "losses")})
            except ValueError as exc:       # e.g. fewer than 2 test images
                entry["error"] = str(exc)
            rows.append(entry)
    return rows


# ------------------------------------------------------------------------------------------------ report
def _fmt(key: str, v) -> str:
    if v is None or isinstance(v, float) and math.isnan(v):
        return "nan"
    if key == "patches":
        return str(int(v))
    return f"{v:.1f}" if key.endswith("_s") else f"{v:.4f}"


def table(results: list[dict], sanity=()) -> str:
    """Markdown table: set, arm, val Dice, test Dice, test boundary Dice, patches, train s; sets in `sanity`
    (no test rows) are marked "(test = train)"."""
    head = "| set | arm | val Dice | test Dice | test boundary Dice | patches | train s |"
    lines = [head, "|" + "---|" * 7]
    for r in results:
        name = r["set"] + (" (test = train)" if r["set"] in sanity else "")
        lines.append(f"| {name} | {r['arm']} | " + " | ".join(_fmt(k, r.get(k)) for k in ROW_KEYS) + " |")
    return "\n".join(lines)


def key_values(r: dict) -> str:
    return f"set={r['set']} arm={r['arm']} " + " ".join(f"{k}={_fmt(k, r.get(k))}" for k in ROW_KEYS)


def significance_line(s: dict) -> str:
    head = f"[{s['set']}] test {s['arm']} vs {s['reference']}:"
    if "error" in s:
        return f"{head} no test ({s['error']})"
    return (f"{head} n={s['n']} mean_diff={s['mean_diff']:+.4f} t={s['t']:.3g} p={s['p']:.3g} "
            f"cohens_d={s['cohens_d']:.3g} wins/ties/losses={s['wins']}/{s['ties']}/{s['losses']}")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training minutes per arm")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated data set folders under --data")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME:KEY=VALUE,KEY=VALUE",
                    help="an extra arm: TrainConfig overrides (repeatable)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of the data set folders")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_real"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every arm (tests/smoke runs shrink the model with it)")
    ap.add_argument("--skip-plain", action="store_true",
                    help="leave out the plain arm (comparing candidates with the defaults only; the README table "
                         "needs it)")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        ap.error("--minutes must be > 0")
    try:
        candidates = [parse_candidate(c) for c in args.candidate]
        base = TrainConfig().override(args.set).validate()
        for _, overrides in candidates:          # a bad key fails now, not after an hour of training
            TrainConfig().override(args.set + overrides).validate()
    except ValueError as exc:
        ap.error(str(exc))
    names = [n for n, _ in candidates]
    if len(set(names)) != len(names):
        ap.error(f"candidate names repeat: {names}")
    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        sys.exit(f"{data}: data folder not found (--data names the folder holding the data set folders)")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    missing = [str(data / s / "manifest.csv") for s in sets if not (data / s / "manifest.csv").is_file()]
    if missing:
        sys.exit(f"{missing[0]}: manifest not found (--data names the folder holding the data set folders)")

    prepare_splits = load_benchmark("bench_instances").prepare_splits
    seconds = args.minutes * 60.0
    arms = [("defaults", list(args.set))] + [(n, list(args.set) + o) for n, o in candidates]
    results: list[dict] = []
    split_info: dict[str, dict] = {}
    for name in sets:
        splits = prepare_splits(name, data / name / "manifest.csv", out / name, base.val_fraction, args.seed)
        val_is_train = {s.image for s in splits.val} <= {s.image for s in splits.train}
        split_info[name] = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                            "test_is_train": splits.sanity, "val_is_train": val_is_train,
                            "train_csv": str(splits.train_csv), "test_csv": str(splits.test_csv)}
        print(f"[{name}] {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test images; "
              f"{args.minutes:g} min per arm" + ("; sanity case: no test rows, test = train" if splits.sanity
                                                  else ""), flush=True)
        if not args.skip_plain:
            results.append(run_plain(splits, base, seconds, out / name / "plain", args.seed))
            print(f"[{name}] done: {key_values(results[-1])}", flush=True)
        for arm, overrides in arms:
            results.append(run_package(arm, splits, overrides, seconds, out / name / arm, args.seed))
            print(f"[{name}] done: {key_values(results[-1])} ({results[-1]['note']})", flush=True)

    choice = pick_arm(results, [n for n, info in split_info.items() if info["val_is_train"]])
    tests = significance(results, out)
    write_text_atomic(out / "results.json", json.dumps(
        {"minutes": args.minutes, "seed": args.seed, "shared_overrides": args.set,
         "candidates": dict(candidates), "splits": split_info, "results": results, "choice": choice,
         "significance": tests}, indent=2))
    for s in tests:
        print(significance_line(s))
    print("validation (mean over sets of val Dice; test not used): "
          + ", ".join(f"{a} {v:.4f} (beats defaults on {choice['beats_defaults'][a]}/{len(choice['sets'])})"
                      for a, v in choice["mean_val_dice"].items())
          + (" [only sets whose val images are training images]" if choice["val_is_train_only"] else ""))
    print(table(results, [n for n, info in split_info.items() if info["test_is_train"]]))
    for r in results:
        print(key_values(r))
    picked = choice["picked"]
    print(f"picked={picked} mean_val_dice={_fmt('dice', choice['mean_val_dice'].get(picked))} "
          f"minutes={args.minutes:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
