"""Few-shot adaptation, leave one dataset out, over the real sets in ../shared/data (one run, one machine).

For every target set T (a set with train and test rows):
  * extractors: one model (`--extractor-model`, default the paper's `msd`) per OTHER set, trained on that set's
    train rows for `--extractor-minutes` (each set's extractor is trained once per run and reused for every target),
    and the OTHER sets' full-training U-Nets of reference (b) (checkpoints of the same run, reused; every target's
    reference is trained before any adaptation; `--no-full-extractors`: the MSDs only);
  * few-shot: for K in `--shots` (1, 3, 5, 10; K <= T's train rows) and `--draws` seeded draws of K support images
    from T's train split, `cellseg_tf.fewshot.adapt` on the other sets' extractors; the test split is predicted with
    the logistic-regression weights and with the BFGS-on-Dice weights (reported separately) through the package's
    ordinary predictor and scored with its evaluation (a model equal in architecture and weights to one already
    scored in the draw is not predicted again); method "adapted" is the model `adapt` saves (the solution
    its report calls `chosen`, the row's too), scored from those two predictions;
  * reference (a): a U-Net (package defaults) trained from scratch on the same K images for the wall-clock time
    that adaptation (with the default extractors and options) took;
  * reference (b): the package's full training (U-Net, defaults) on all of T's train rows for `--minutes`.
Dice is the mean over T's test images per draw; tables give the median and quartiles over draws, and adaptation
seconds. Rows go to OUT/results.csv, the table to OUT/summary.csv; the last lines check the goals (5 shots >= 80 %
of full training on >= 3 sets, each adaptation <= 60 s, BFGS never below logistic, both above reference (a)).

    python benchmarks/bench_fewshot.py [--minutes 12] [--targets isbi2012_em,...] [--quick] [--out runs/bench_fewshot]
                                       [--resume]

--resume goes on with an interrupted run in --out (its extractors, full-training references and finished draws are
kept); K is run in the order given by --shots (e.g. 5,1,3,10 measures the goal's K first).

--filter-sigmas none --compare-filters 1,2,4,8 adapts every draw without and again with the image's own
Gaussian-derivative filter responses added to the extractors' features (methods logistic_filters, bfgs_filters; the
filters are on by default); --compare-pooled-dice adapts every draw again with the BFGS step's Dice pooled over all
support pixels (methods logistic_pooled, bfgs_pooled; the default averages each support image's Dice);
--feature-levels N sets the map levels per extractor of the default variant (AdaptConfig.feature_levels);
--compare-feature-levels N adapts every draw again with N levels (methods logistic_levelsN, bfgs_levelsN);
--compare-msd-only adapts every draw again on the MSD extractors alone (methods logistic_msd, bfgs_msd); --val-rows N
also scores every adapted model on N train rows outside its support set (val_dice), the split on which a default
may be chosen.

--quick: K in {1, 3}, 2 draws, 64 px patches (with a small --minutes, a smoke test of the whole pipeline whose
numbers mean nothing).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellseg_tf.analysis.evaluation import evaluate_folder  # noqa: E402
from cellseg_tf.cli_args import float_list  # noqa: E402
from cellseg_tf.common.files import atomic_path, write_text_atomic  # noqa: E402
from cellseg_tf.data.io import open_manifest  # noqa: E402
from cellseg_tf.data.manifest import select, write_manifest  # noqa: E402
from cellseg_tf.fewshot import AdaptConfig, adapt  # noqa: E402
from cellseg_tf.fewshot.support import draw_support  # noqa: E402
from cellseg_tf.predict.batch_predict import predict_batch  # noqa: E402
from cellseg_tf.predict.options import BatchOptions  # noqa: E402
from cellseg_tf.training.config import TrainConfig  # noqa: E402
from cellseg_tf.training.engine import train  # noqa: E402

GOAL_SHOTS, GOAL_RATIO, GOAL_SECONDS = 5, 0.8, 60.0
NO_DRAWS = "no few-shot draws in this run: references and extractors only (--resume adds draws)"


def datasets(root: Path) -> dict[str, Path]:
    """Name -> manifest of every set under `root`."""
    return {p.parent.name: p for p in sorted(root.glob("*/manifest.csv"))}


def test_dice(model: Path, test, out: Path) -> float:
    """Mean Dice of `model` over the test rows, through the package's predictor and evaluation."""
    predict_batch([s.image for s in test], [str(model)], out, BatchOptions(progress=False, overwrite=True))
    return float(evaluate_folder(out, test, verbose=False)["dice"].mean())


def train_model(manifest: Path, out: Path, model: str, seconds: float, args, samples=None, **options) -> Path:
    """best.keras of a package training run of `model` for `seconds` (defaults otherwise)."""
    config = TrainConfig(manifest=str(manifest), out=str(out), model=model, patch_size=args.patch_size,
                         batch_size=args.batch_size, time_budget_s=max(seconds, 1.0), seed=args.seed, verbose=0,
                         model_options=options)
    return train(config, samples).best_model


def model_fingerprint(model) -> str:
    """SHA-1 of a Keras model's layer types (in order) and every weight with its shape, names left out (a clone's
    differ): two models with one fingerprint predict alike, so a draw scores them once (e.g. the logistic step of
    variants that differ only in the Dice step)."""
    digest = hashlib.sha1(" ".join(type(layer).__name__ for layer in model.layers).encode())
    for weight in model.get_weights():
        digest.update(str(weight.shape).encode())
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def target_extractors(msds: dict[str, Path], full: dict[str, Path], target: str) -> tuple[list[str], list[str]]:
    """The extractors adapting to `target` uses: (the other sets' MSDs, the other sets' full-training U-Nets), each
    in set order (a lab's earlier models; the target's own are left out)."""
    def others(models: dict[str, Path]) -> list[str]:
        return [str(m) for s, m in sorted(models.items()) if s != target]
    return others(msds), others(full)


def held_out_rows(train_rows, support, n: int, seed: int) -> list:
    """Up to n of the train rows with a mask that are not in the support set, drawn with `seed` (validation)."""
    used = {s.image for s in support}
    rest = [s for s in train_rows if s.image not in used and s.mask]
    if n <= 0 or not rest:
        return []
    picked = np.sort(np.random.default_rng(seed + 10_000).choice(len(rest), min(n, len(rest)), replace=False))
    return [rest[i] for i in picked]


def support_manifest(rows, out: Path) -> Path:
    """A manifest of just the K support rows (train), for reference (a)."""
    return write_manifest(out, [{"image": s.image, "mask": s.mask, "split": "train"} for s in rows])


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Median / quartiles of per-draw Dice per target, K and method; full-training Dice and adaptation seconds."""
    rows = []
    full = results[results.method == "full"].set_index("target")["dice"]
    for (target, shots), group in results[results.method != "full"].groupby(["target", "shots"]):
        row = {"target": target, "shots": int(shots), "full": float(full.get(target, np.nan))}
        for method, g in group.groupby("method"):
            q1, med, q3 = np.percentile(g["dice"], [25, 50, 75])
            row.update({f"{method}_median": med, f"{method}_q1": q1, f"{method}_q3": q3})
            if "val_dice" in g and g["val_dice"].notna().any():
                row[f"{method}_val_median"] = float(g["val_dice"].median())
        seconds = group[group.method == "bfgs"]["seconds"]
        row.update({"adapt_s_median": float(seconds.median()), "adapt_s_max": float(seconds.max())})
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["bfgs_over_full"] = table["bfgs_median"] / table["full"]
    return table


def goal_lines(results: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The issue's goals, checked for every variant in the run ("" = the default; "_filters", "_pooled" compared)."""
    if not (results.method != "full").any():
        return [NO_DRAWS]
    vs_scratch = results[results.method != "full"].pivot_table(index=["target", "shots", "draw"], columns="method",
                                                               values="dice")
    at5 = table[table.shots == GOAL_SHOTS]
    lines = []
    for suffix in sorted(m[len("bfgs"):] for m in vs_scratch if str(m).startswith("bfgs")):
        lr, bfgs = f"logistic{suffix}", f"bfgs{suffix}"
        few = results[results.method.isin([lr, bfgs])]
        paired = vs_scratch[[lr, bfgs]].dropna()
        if len(at5) and f"{bfgs}_median" in at5:
            ratio = at5[f"{bfgs}_median"] / at5["full"]
            lines.append(f"goal 5-shot >= {GOAL_RATIO:.0%} of full training ({bfgs}): "
                         f"{int((ratio >= GOAL_RATIO).sum())}/{len(at5)} sets (want >= 3 of 4)")
        else:
            lines.append(f"goal 5-shot ratio ({bfgs}): not measured (no K=5 runs)")
        lines += [f"goal adaptation <= {GOAL_SECONDS:.0f} s ({bfgs}): max {few['seconds'].max():.1f} s",
                  f"goal BFGS >= logistic ({bfgs}): {int((paired[bfgs] >= paired[lr] - 1e-9).sum())}/{len(paired)} "
                  f"draws; median gain {float((paired[bfgs] - paired[lr]).median()):+.4f}"]
        kept = f"adapted{suffix}"          # the package's output (the solution adapt() kept)
        if kept in vs_scratch:
            both = vs_scratch[[lr, kept]].dropna()
            n_lr = int((results.loc[results.method == kept, "chosen"] == "logistic").sum())
            lines.append(f"goal adapted model >= logistic ({kept}): {int((both[kept] >= both[lr] - 1e-9).sum())}/"
                         f"{len(both)} draws; logistic kept in {n_lr}")
        if "scratch" in vs_scratch:
            for method in (lr, bfgs, kept) if kept in vs_scratch else (lr, bfgs):
                both = vs_scratch[[method, "scratch"]].dropna()          # draws where this variant was run
                wins = int((both[method] > both["scratch"]).sum())
                lines.append(f"goal {method} > scratch U-Net (same K, same time): {wins}/{len(both)} draws")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_fewshot"))
    ap.add_argument("--targets", help="comma-separated target sets (default: every set with train and test rows)")
    ap.add_argument("--shots", help="comma-separated K (default 1,3,5,10; --quick: 1,3)")
    ap.add_argument("--draws", type=int, help="seeded support draws per K (default 5; --quick: 2)")
    ap.add_argument("--minutes", type=float, default=12.0, help="full-training reference (b), per target")
    ap.add_argument("--extractor-minutes", type=float, help="training time per extractor (default: --minutes)")
    ap.add_argument("--extractor-model", default="msd")
    ap.add_argument("--extractor-depth", type=int, help="MSD depth (default: the model's)")
    ap.add_argument("--patch-size", type=int, help="training patch = extractor input size (default 128; --quick: 64)")
    ap.add_argument("--batch-size", type=int, help="training batch (default 8; --quick: 4)")
    ap.add_argument("--max-pixels", type=int, help="adaptation pixel cap (default: the package's)")
    ap.add_argument("--skip-scratch", action="store_true", help="leave out reference (a)")
    ap.add_argument("--filter-sigmas", type=float_list, default=None, metavar="S1,S2,...",
                    help="image filter scales for the adaptation ('none': off; default: the package's)")
    ap.add_argument("--compare-filters", type=float_list, default=None, metavar="S1,S2,...",
                    help="also adapt every draw with these image filter scales (methods logistic_filters, "
                         "bfgs_filters), in the same run")
    ap.add_argument("--compare-pooled-dice", action="store_true",
                    help="also adapt every draw with the BFGS step's Dice pooled over all support pixels instead "
                         "of averaged per support image (methods logistic_pooled, bfgs_pooled)")
    ap.add_argument("--compare-anchor", action="store_true",
                    help="also adapt every draw with the BFGS step's L2 penalty centred on the logistic weights "
                         "(methods logistic_anchor, bfgs_anchor)")
    ap.add_argument("--feature-levels", type=int, default=None, metavar="N",
                    help="map levels per extractor for the default variant (default: the package's)")
    ap.add_argument("--compare-feature-levels", type=int, default=None, metavar="N",
                    help="also adapt every draw with N map levels per extractor (methods logistic_levelsN, "
                         "bfgs_levelsN), in the same run")
    ap.add_argument("--no-full-extractors", action="store_true",
                    help="adapt on the --extractor-model extractors only, without the other sets' full-training "
                         "U-Nets")
    ap.add_argument("--compare-msd-only", action="store_true",
                    help="also adapt every draw on the --extractor-model extractors alone (methods logistic_msd, "
                         "bfgs_msd), in the same run")
    ap.add_argument("--val-rows", type=int, default=0,
                    help="also score every adapted model on up to this many of the target's train rows outside "
                         "the support set (val_dice: for choosing defaults without the test split)")
    ap.add_argument("--resume", action="store_true",
                    help="go on with an interrupted run in --out: its extractors, full-training references and "
                         "finished draws (OUT/results.csv) are kept, the rest is run")
    ap.add_argument("--quick", action="store_true", help="smoke test: K 1,3, 2 draws, 64 px patches")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    defaults = {"shots": "1,3", "draws": 2, "patch_size": 64, "batch_size": 4} if args.quick else \
        {"shots": "1,3,5,10", "draws": 5, "patch_size": 128, "batch_size": 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    ext_minutes = args.extractor_minutes if args.extractor_minutes is not None else args.minutes
    shots = [int(k) for k in args.shots.split(",")]
    out = Path(args.out)
    sets = datasets(Path(args.data))
    if len(sets) < 2:
        raise SystemExit(f"{args.data}: need at least two datasets with a manifest.csv, found {list(sets)}")
    samples = {name: open_manifest(m) for name, m in sets.items()}
    targets = args.targets.split(",") if args.targets else list(sets)
    for name in targets:
        if name not in sets:
            raise SystemExit(f"unknown target {name!r}; sets: {', '.join(sets)}")
    ext_options = {"depth": args.extractor_depth} if args.extractor_depth else {}
    # (method suffix, AdaptConfig overrides, with the other sets' full-training U-Nets among the extractors)
    full = not args.no_full_extractors
    base = {} if args.filter_sigmas is None else {"filter_sigmas": args.filter_sigmas}
    if args.feature_levels is not None:
        base["feature_levels"] = args.feature_levels
    variants = [("", base, full)]
    if args.compare_filters:
        variants.append(("_filters", {"filter_sigmas": args.compare_filters}, full))
    if args.compare_pooled_dice:
        variants.append(("_pooled", {"dice_average": "pooled"}, full))
    if args.compare_anchor:
        variants.append(("_anchor", {**base, "dice_anchor": "logistic"}, full))
    if args.compare_feature_levels is not None:
        variants.append((f"_levels{args.compare_feature_levels}",
                         {**base, "feature_levels": args.compare_feature_levels}, full))
    if args.compare_msd_only:
        variants.append(("_msd", {}, False))

    t_start = time.perf_counter()
    extractors: dict[str, Path] = {}
    results = []
    if args.resume:
        extractors = {p.parent.name: p for p in sorted((out / "extractors").glob("*/best.keras"))
                      if p.parent.name in sets}
        if (out / "results.csv").is_file():
            results = pd.read_csv(out / "results.csv").to_dict("records")
        print(f"resuming {out}: extractors {', '.join(extractors) or 'none'}, {len(results)} result rows",
              flush=True)
    done = {(r["target"], int(r["shots"]), int(r["draw"]), r["method"]): r for r in results}
    full_done = {r["target"]: r for r in results if r["method"] == "full"}

    splits = {name: (select(rows, "train"), [s for s in select(rows, "test") if s.mask])   # (train, test) rows
              for name, rows in samples.items()}
    runnable = [t for t in targets if all(splits[t])]
    skipped = [f"{t}: {len(splits[t][0])} train / {len(splits[t][1])} test rows, needs both" for t in targets
               if t not in runnable]
    referenced = runnable if args.no_full_extractors else [s for s in sets if all(splits[s])]
    full_models = {}
    for target in referenced:       # reference (b) of every set first: they are extractors for the other targets
        train_rows, test = splits[target]
        kept = out / "full" / target / "best.keras"
        if target in full_done and kept.is_file():
            full_models[target] = kept
            print(f"{target}: full training {full_done[target]['dice']:.4f} (kept from the interrupted run)")
            continue
        full_models[target] = train_model(sets[target], out / "full" / target, "unet", args.minutes * 60, args,
                                          samples[target])
        results = [r for r in results if not (r["target"] == target and r["method"] == "full")]
        results.append({"target": target, "shots": len(train_rows), "draw": -1, "seed": -1, "method": "full",
                        "dice": test_dice(full_models[target], test, out / "pred" / target / "full"),
                        "seconds": args.minutes * 60})
        print(f"{target}: full training {results[-1]['dice']:.4f}", flush=True)
        write_text_atomic(out / "results.csv", pd.DataFrame(results).to_csv(index=False))
    for target in runnable:
        train_rows, test = splits[target]
        for source in sets:                                       # extractors of the other sets, trained once
            if source != target and source not in extractors:
                t = time.perf_counter()
                extractors[source] = train_model(sets[source], out / "extractors" / source, args.extractor_model,
                                                 ext_minutes * 60, args, samples[source], **ext_options)
                print(f"extractor {args.extractor_model} on {source}: {time.perf_counter() - t:.0f} s", flush=True)
        own, unets = target_extractors(extractors, full_models, target)
        sources = {False: own, True: own + unets}                  # extractors, by "with full U-Nets"
        for k in [k for k in shots if k <= len(train_rows)]:
            for draw in range(args.draws):
                key = (target, k, draw)
                todo = [v for v in variants if (*key, "bfgs" + v[0]) not in done]
                scratch = not args.skip_scratch and (*key, "scratch") not in done
                if not todo and not scratch:
                    continue
                seed = args.seed + draw
                tag = f"k{k}_s{seed}"
                support, _ = draw_support(sets[target], k, seed)            # the rows adapt() uses
                held = held_out_rows(train_rows, support, args.val_rows, seed)
                line = f"{target} K={k} seed={seed}:"
                scored = {}                       # model fingerprint -> (test Dice, val Dice) within the draw
                for suffix, overrides, with_full in todo:
                    config = AdaptConfig(extractors=sources[with_full], support=str(sets[target]), shots=k,
                                         seed=seed, out=str(out / "adapted" / target / f"{tag}{suffix}.keras"),
                                         verbose=0, **overrides)
                    if args.max_pixels:
                        config.max_pixels = args.max_pixels
                    result = adapt(config)
                    row = {"target": target, "shots": k, "draw": draw, "seed": seed,
                           "seconds": result.report["seconds"]["total"]}
                    for method in ("logistic", "bfgs"):
                        path = out / "adapted" / target / f"{tag}{suffix}_{method}.keras"
                        model = result.model_with(method)
                        with atomic_path(path) as tmp:
                            model.save(tmp)
                        fingerprint = model_fingerprint(model)
                        if fingerprint not in scored:
                            scored[fingerprint] = (
                                test_dice(path, test, out / "pred" / target / f"{tag}{suffix}_{method}"),
                                test_dice(path, held, out / "pred" / target / f"{tag}{suffix}_{method}_val")
                                if held else np.nan)
                        dice, val = scored[fingerprint]
                        results.append({**row, "method": method + suffix, "dice": dice, "val_dice": val})
                        done[(*key, method + suffix)] = results[-1]
                        line += f" {method + suffix} {dice:.4f}" + (f" (val {val:.4f})" if held else "")
                    # the package's own output: the solution adapt() kept
                    chosen = result.report["chosen"]
                    kept = done[(*key, chosen + suffix)]
                    results.append({**row, "method": "adapted" + suffix, "dice": kept["dice"],
                                    "val_dice": kept["val_dice"], "chosen": chosen})
                    done[(*key, "adapted" + suffix)] = results[-1]
                    line += f" (adapted: {chosen})"
                    line += f" [{row['seconds']:.1f} s, lambda {result.report['lambda']:g}]"
                if scratch:      # the same seconds as the default variant's adaptation took
                    row = {k_: v for k_, v in done[(*key, "bfgs" + variants[0][0])].items()
                           if k_ in ("target", "shots", "draw", "seed", "seconds")}
                    manifest = support_manifest(support, out / "scratch" / target / tag / "manifest.csv")
                    model = train_model(manifest, out / "scratch" / target / tag / "run", "unet", row["seconds"],
                                        args)
                    dice = test_dice(model, test, out / "pred" / target / f"{tag}_scratch")
                    results.append({**row, "method": "scratch", "dice": dice})
                    line += f" scratch {dice:.4f}"
                print(line, flush=True)
                write_text_atomic(out / "results.csv", pd.DataFrame(results).to_csv(index=False))

    frame = pd.DataFrame(results)
    for reason in skipped:
        print(f"skipped target {reason}")
    if frame.empty:
        print("no target could be run")
        return 1
    table = summarize(frame)
    write_text_atomic(out / "results.csv", frame.to_csv(index=False))
    write_text_atomic(out / "summary.csv", table.to_csv(index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(table.to_string(index=False))
    for line in goal_lines(frame, table):
        print(line)
    print(f"total_minutes={(time.perf_counter() - t_start) / 60:.1f} out={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
