"""Equal-time instance segmentation benchmark: cellseg_tf's targets and post-processing against StarDist.

For each data set and the same wall-clock training minutes per arm, in one run on this machine:
  binary      cellseg_tf, target "binary" (foreground only), cells = connected components (default InstanceParams);
  contour     cellseg_tf, target "contour" (foreground + cell-boundary band), seeded watershed, its InstanceParams
              tuned on the validation images (`predict.tuning.tune_run`);
  distance    cellseg_tf, target "distance" (foreground + normalised distance to the cell border), likewise;
  stardist    StarDist2D from scratch (benchmarks/stardist_arm.py in .venv-stardist, `make bench-instances-deps`),
              thresholds optimised on up to 4 validation images; stardist_x4 (--stardist-x4): 4× the minutes.
The package arms call `training.engine.train(TrainConfig(target=..., time_budget_s=...))` with every other setting at
its default. Every arm trains on the same train rows and validates / tunes on the same val rows (the manifest's, or
the seeded share `engine.split_train_val` holds out), written to OUT/<set>/train.csv; each writes instance label
TIFFs for the TEST rows (OUT/<set>/test.csv) once training and tuning are over, and all are scored by the same
code, cellseg_tf's evaluation (`analysis.evaluation.image_scores`: `predict.matching.instance_metrics`, pixel Dice).

Scores: per-image means of instance F1 / precision / recall at IoU 0.5, mAP over IoU 0.5:0.95 (TP/(TP+FP+FN) per
threshold) and pixel Dice; f1_pooled sums TP/FP/FN over the test images first. val_f1 is the pooled F1@0.5 of each
arm's labels on all validation images (after its tuning; same scoring code): the contour vs distance line compares
it, as a default may only be chosen on validation scores; test scores are for reporting.
A set without test rows (stardist_dsb_sample: one image) is scored on its training image: a sanity check of
fitting, not a generalisation score, and the output says so.

Last lines: a table, then one `set=<s> arm=<a> f1=<v> precision=<v> recall=<v> map=<v> dice=<v> ...` line per arm.

Usage: python benchmarks/bench_instances.py --minutes M [--sets dsb2018_fluo,usiigaci_phase,stardist_dsb_sample]
       [--arms binary,contour,distance,stardist] [--stardist-x4] [--out runs/bench_instances] [--data DIR]
       [--set KEY=VALUE ...] [--reuse]
--reuse: arms already trained in --out by an earlier run are re-tuned and re-scored instead of trained again (a
post-processing change measured on the same models; patches and train seconds are the earlier run's).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellseg_tf.analysis.evaluation import image_scores, summarize  # noqa: E402
from cellseg_tf.common.files import write_text_atomic  # noqa: E402
from cellseg_tf.data.io import open_manifest, read_mask, write_tiff  # noqa: E402
from cellseg_tf.data.manifest import Sample, select, write_manifest  # noqa: E402

SETS = ("dsb2018_fluo", "usiigaci_phase", "stardist_dsb_sample")
PACKAGE_ARMS = ("binary", "contour", "distance")     # the arm name is the TrainConfig.target
DEFAULT_ARMS = PACKAGE_ARMS + ("stardist",)
STARDIST_VENV = ROOT / ".venv-stardist"
STARDIST_SCRIPT = Path(__file__).resolve().parent / "stardist_arm.py"
TABLE_COLUMNS = ("f1", "precision", "recall", "map", "dice", "f1_pooled", "val_f1", "patches", "train_s", "tune_s",
                 "predict_s")


@dataclass
class Splits:
    """One set's rows: train / val / test Samples and the manifests every arm reads (OUT/<set>/{train,test}.csv)."""

    name: str
    train: list
    val: list
    test: list
    train_csv: Path
    test_csv: Path
    sanity: bool = False          # no test rows: test == train (fitting check only)


@dataclass
class ArmResult:
    set: str
    arm: str
    scores: dict = field(default_factory=dict)   # f1, precision, recall, map, dice, f1_pooled (test split)
    patches: int = 0
    train_s: float = float("nan")
    tune_s: float = 0.0
    predict_s: float = float("nan")
    val_f1: float = float("nan")                 # pooled F1@0.5 on all validation images after tuning
    note: str = ""

    def row(self) -> dict:
        nan = float("nan")
        return {"set": self.set, "arm": self.arm, **{k: self.scores.get(k, nan) for k in
                ("f1", "precision", "recall", "map", "dice", "f1_pooled")},
                "val_f1": self.val_f1, "patches": self.patches, "train_s": self.train_s, "tune_s": self.tune_s,
                "predict_s": self.predict_s, "note": self.note}


# ------------------------------------------------------------------------------------------------ splits
def prepare_splits(name: str, manifest: Path, out: Path, val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """The manifest's rows -> the train/val/test lists every arm uses, written as OUT/train.csv + OUT/test.csv.

    Validation rows are the manifest's split=val rows, else the share of train rows the training engine itself would
    hold out (`split_train_val`, same fraction and seed), written explicitly so StarDist validates on the same
    images. A single training image validates on itself (as the engine does); without test rows, test = train.
    """
    from cellseg_tf.training.engine import split_train_val

    samples = open_manifest(manifest)
    train, val = split_train_val(samples, val_fraction, seed)
    test = select(samples, "test")
    sanity = not test
    if sanity:
        test = train
    rows = [{"image": s.image, "mask": s.mask, "split": "train"} for s in train]
    if val is not train:
        rows += [{"image": s.image, "mask": s.mask, "split": "val"} for s in val]
    train_csv = write_manifest(out / "train.csv", rows)
    test_csv = write_manifest(out / "test.csv", [{"image": s.image, "mask": s.mask, "split": "test"} for s in test])
    return Splits(name, train, val, open_manifest(test_csv), train_csv, test_csv, sanity)


# ------------------------------------------------------------------------------------------------ scoring
def score_labels(test: list[Sample], predictions: dict[str, Path]) -> dict:
    """Label files of the test images -> mean instance F1/P/R@0.5, mAP 0.5:0.95, pixel Dice and pooled F1.

    predictions: {sample.image: label file}. Truth masks are read as instance labels (a binary mask -> components).
    """
    import pandas as pd

    rows = []
    for s in test:
        if s.image not in predictions:
            raise FileNotFoundError(f"no prediction for test image {s.image}")
        pred = read_mask(predictions[s.image], instances=True)
        truth = read_mask(s.mask, instances=True)
        rows.append(image_scores(pred, truth, groups=("pixel", "instance")))
    report = pd.DataFrame(rows)
    mean = summarize(report)
    tp, n_true, n_pred = (float(report[c].sum()) for c in ("instance_tp", "n_true_instances", "n_pred_instances"))
    return {"f1": mean["mean_instance_f1"], "precision": mean["mean_instance_precision"],
            "recall": mean["mean_instance_recall"], "map": mean["mean_map_50_95"], "dice": mean["mean_dice"],
            "f1_pooled": 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0, "n_images": mean["n"]}


# ------------------------------------------------------------------------------------------------ package arms
def _batch_counter():
    import keras

    class BatchCounter(keras.callbacks.Callback):
        """Counts optimiser steps over every fit call of a run."""

        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

    return BatchCounter()


def run_package_arm(kind: str, splits: Splits, minutes: float, out: Path, overrides: list[str] | None = None,
                    seed: int = 0) -> ArmResult:
    """Train with TrainConfig(target=kind) for `minutes`, then `tune_and_score`."""
    import keras

    from cellseg_tf.training.config import TrainConfig
    from cellseg_tf.training.engine import train

    keras.backend.clear_session()
    config = TrainConfig(manifest=str(splits.train_csv), out=str(out / "run"), target=kind,
                         time_budget_s=minutes * 60.0, seed=seed, verbose=2)
    config.override(overrides)
    counter = _batch_counter()
    t0 = time.perf_counter()
    result = train(config, callbacks=[counter])
    res = ArmResult(splits.name, kind, patches=counter.batches * config.batch_size,
                    train_s=time.perf_counter() - t0)
    return tune_and_score(res, splits, Path(result.best_model), out)


def reuse_package_arm(kind: str, splits: Splits, out: Path, previous: dict | None) -> ArmResult:
    """An arm trained by an earlier run into `out` (OUT/<set>/<arm>/run/best.keras): not trained again, only
    re-tuned and re-scored by `tune_and_score` (a change of post-processing measured on the same models); patches
    and train_s come from the earlier run's results.json row when there is one."""
    best = out / "run" / "best.keras"
    res = ArmResult(splits.name, kind, patches=int((previous or {}).get("patches", 0)),
                    train_s=float((previous or {}).get("train_s", float("nan"))))
    res = tune_and_score(res, splits, best, out)
    res.note = f"reused model; {res.note}"
    return res


def tune_and_score(res: ArmResult, splits: Splits, best_model: Path, out: Path) -> ArmResult:
    """Tune InstanceParams on val (not for binary), predict the test images with the Predictor + `labels_from_maps`
    (OUT/labels/<stem>.tif, scored) and the val images (OUT/labels_val/, their pooled F1 is `val_f1`)."""
    from cellseg_tf.models import target_kind
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.instance_params import run_instance_params
    from cellseg_tf.predict.instances import as_label_image, labels_from_maps
    from cellseg_tf.predict.tuning import tune_run

    kind = res.arm
    if kind != "binary":
        t0 = time.perf_counter()
        tune_run(best_model.parent, model=best_model, progress=False)
        res.tune_s = time.perf_counter() - t0
    predictor = Predictor.from_files([best_model])
    saved_kind = target_kind(predictor.models[0])
    notes = [f"trained as {saved_kind}"] if saved_kind != kind else []
    params = run_instance_params([best_model])
    notes.append(f"tta={predictor.options.tta}")       # tta "auto": the run's validated choice
    if kind != "binary":
        notes.append(" ".join(f"{k}={v}" for k, v in params.to_dict().items()))
    res.note = "; ".join(notes)

    def predict(samples: list[Sample], folder: Path) -> tuple[dict, float]:
        written, seconds = {}, 0.0
        for s in samples:
            t0 = time.perf_counter()
            maps, _ = predictor.predict_file(s.image)
            labels = labels_from_maps(maps, saved_kind, params)
            seconds += time.perf_counter() - t0
            written[s.image] = write_tiff(folder / f"{s.stem}.tif", as_label_image(labels))
        return written, seconds

    predictions, res.predict_s = predict(splits.test, out / "labels")
    res.scores = score_labels(splits.test, predictions)
    res.val_f1 = score_labels(splits.val, predict(splits.val, out / "labels_val")[0])["f1_pooled"]
    return res


# ------------------------------------------------------------------------------------------------ StarDist arm
def stardist_env() -> dict:
    return {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def stardist_status(venv: Path = STARDIST_VENV) -> tuple[bool, str]:
    """(True, version) when `venv` imports stardist under TF_USE_LEGACY_KERAS=1, else (False, why)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return False, f"{venv} not found (run `make bench-instances-deps`)"
    try:
        done = subprocess.run([str(python), "-c", "import stardist.models, stardist; print(stardist.__version__)"],
                              env=stardist_env(), capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return False, f"{python}: importing stardist took over 10 minutes"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return False, f"{python}: cannot import stardist ({lines[-1] if lines else f'exit {done.returncode}'})"
    return True, done.stdout.strip().splitlines()[-1]


def run_stardist_arm(arm: str, splits: Splits, minutes: float, out: Path, seed: int = 0,
                     venv: Path = STARDIST_VENV) -> ArmResult:
    """benchmarks/stardist_arm.py in the StarDist venv (log: OUT/stardist.log), then score its label TIFFs."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stardist.log"
    cmd = [str(venv / "bin" / "python"), str(STARDIST_SCRIPT), "--train", str(splits.train_csv),
           "--test", str(splits.test_csv), "--minutes", f"{minutes:g}", "--out", str(out), "--seed", str(seed)]
    with log.open("w") as fh:
        rc = subprocess.run(cmd, env=stardist_env(), stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"[{splits.name}] {arm} failed (exit {rc}); the end of {log}:\n  " + "\n  ".join(tail), flush=True)
        return ArmResult(splits.name, arm, note=f"failed (exit {rc}, see {log})")
    return score_stardist_arm(arm, splits, out)


def score_stardist_arm(arm: str, splits: Splits, out: Path) -> ArmResult:
    """Score the label TIFFs a StarDist arm wrote (OUT/stardist.json lists them) with the package's evaluation."""
    info = json.loads((out / "stardist.json").read_text())
    res = ArmResult(splits.name, arm, patches=int(info["patches_seen"]), train_s=float(info["train_seconds"]),
                    tune_s=float(info["tune_seconds"]), predict_s=float(info["predict_seconds"]),
                    note=f"prob={info['thresholds']['prob']:.3f} nms={info['thresholds']['nms']:.2f}")
    res.scores = score_labels(splits.test, {k: Path(v) for k, v in info["predictions"].items()})
    res.val_f1 = score_labels(splits.val, {k: Path(v) for k, v in info["val_predictions"].items()})["f1_pooled"]
    return res


# ------------------------------------------------------------------------------------------------ report
def _fmt(column: str, v, width: int = 0) -> str:
    """Scores with 4 decimals, seconds with 1, counts as integers."""
    if isinstance(v, float) and math.isnan(v):
        text = "nan"
    elif column == "patches":
        text = str(int(v))
    else:
        text = f"{v:.1f}" if column.endswith("_s") else f"{v:.4f}"
    return text.rjust(width)


def arm_line(r: ArmResult) -> str:
    s = r.scores
    if not s:
        return f"[{r.set}] {r.arm}: no scores ({r.note})"
    return (f"[{r.set}] {r.arm}: test F1@0.5 {s['f1']:.4f} (P {s['precision']:.4f}, R {s['recall']:.4f}), "
            f"mAP0.5:0.95 {s['map']:.4f}, pixel Dice {s['dice']:.4f}, pooled F1 {s['f1_pooled']:.4f}"
            + (f", val F1 {r.val_f1:.4f}" if not math.isnan(r.val_f1) else "")
            + f" | {r.patches} train patches in {r.train_s:.0f} s, tune {r.tune_s:.1f} s, "
            f"predict {r.predict_s:.1f} s" + (f" | {r.note}" if r.note else ""))


def key_values(r: ArmResult) -> str:
    row = r.row()
    parts = [f"set={r.set}", f"arm={r.arm}"] + [f"{k}={_fmt(k, row[k])}" for k in TABLE_COLUMNS]
    return " ".join(parts)


def table(results: list[ArmResult]) -> str:
    head = f"{'set':<20}{'arm':<12}" + "".join(c.rjust(10) for c in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        row = r.row()
        lines.append(f"{r.set:<20}{r.arm:<12}" + "".join(_fmt(c, row[c], 10) for c in TABLE_COLUMNS))
    return "\n".join(lines)


def default_pick(results: list[ArmResult], skip: set[str] = frozenset()) -> str | None:
    """Which instance target validates better (mean val F1 over the sets, except `skip`: sets validated on their
    training images): the evidence a default may rest on."""
    means = {}
    for kind in ("contour", "distance"):
        vals = [r.val_f1 for r in results if r.arm == kind and r.set not in skip and not math.isnan(r.val_f1)]
        if vals:
            means[kind] = float(np.mean(vals))
    if len(means) < 2:
        return None
    best = max(means, key=means.get)
    return ("instance target by validation F1 (mean over sets; not test): "
            + ", ".join(f"{k} {v:.4f}" for k, v in means.items()) + f" -> {best}")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training minutes per arm")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated data set folders under --data")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                    help=f"comma-separated arms among {', '.join(DEFAULT_ARMS)}")
    ap.add_argument("--stardist-x4", action="store_true", help="also StarDist with 4× the minutes")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of the data set folders")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_instances"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true",
                    help="arms an earlier run already trained in --out are not trained again: package arms are "
                         "re-tuned on validation and re-scored (post-processing changes on the same models), "
                         "StarDist arms re-scored")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a TrainConfig default for the package arms, e.g. --set patch_size=256")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        ap.error("--minutes must be > 0")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(DEFAULT_ARMS))
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; choose from {', '.join(DEFAULT_ARMS)}")
    if args.stardist_x4 and "stardist" not in arms:
        arms.append("stardist")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    data, out = Path(args.data), Path(args.out)
    missing = [str(data / s / "manifest.csv") for s in sets if not (data / s / "manifest.csv").is_file()]
    if missing:
        sys.exit(f"{missing[0]}: manifest not found (--data names the folder holding the data set folders)")

    use_stardist = "stardist" in arms
    if use_stardist:
        ok, detail = stardist_status()
        print(f"StarDist: {'available, version ' + detail if ok else 'unavailable: ' + detail}", flush=True)
        if not ok:
            arms = [a for a in arms if a != "stardist"]
            use_stardist = False
    stardist_arms = [("stardist", args.minutes)] + ([("stardist_x4", 4 * args.minutes)] if args.stardist_x4 else [])

    previous = {}
    if args.reuse and (out / "results.json").is_file():
        previous = {(r["set"], r["arm"]): r for r in json.loads((out / "results.json").read_text())["results"]}
    results: list[ArmResult] = []
    split_info: dict[str, dict] = {}
    for name in sets:
        from cellseg_tf.training.config import TrainConfig

        defaults = TrainConfig()
        splits = prepare_splits(name, data / name / "manifest.csv", out / name, defaults.val_fraction, args.seed)
        print(f"[{name}] {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test images; "
              f"{args.minutes:g} min of training per arm", flush=True)
        split_info[name] = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                            "test_is_train": splits.sanity,
                            "val_is_train": {s.image for s in splits.val} <= {s.image for s in splits.train},
                            "train_csv": str(splits.train_csv),
                            "test_csv": str(splits.test_csv)}
        if splits.sanity:
            print(f"[{name}] note: no test split — train == val == test (the one image): a sanity check of fitting, "
                  "not a generalisation score", flush=True)
        for arm in arms:
            if arm in PACKAGE_ARMS:
                if args.reuse and (out / name / arm / "run" / "best.keras").is_file():
                    results.append(reuse_package_arm(arm, splits, out / name / arm, previous.get((name, arm))))
                else:
                    results.append(run_package_arm(arm, splits, args.minutes, out / name / arm, args.set, args.seed))
                print(arm_line(results[-1]), flush=True)
        if use_stardist:
            for arm, minutes in stardist_arms:
                if args.reuse and (out / name / arm / "stardist.json").is_file():
                    results.append(score_stardist_arm(arm, splits, out / name / arm))
                    results[-1].note = "reused; " + results[-1].note
                else:
                    results.append(run_stardist_arm(arm, splits, minutes, out / name / arm, args.seed))
                print(arm_line(results[-1]), flush=True)

    report = [r.row() for r in results]
    write_text_atomic(out / "results.json", json.dumps({"minutes": args.minutes, "splits": split_info,
                                                        "results": report}, indent=2))
    pick = default_pick(results, {name for name, info in split_info.items() if info["val_is_train"]})
    if pick:
        print(pick)
    print(table(results))
    for r in results:
        print(key_values(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
