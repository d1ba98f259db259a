"""The benchmark scripts still run against the package's current API (tiny settings, no timing asserted)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_train_times_a_real_train_run_against_the_plain_loop(capsys, tmp_path):
    from cellseg_tf.data.synthetic import make_dataset

    manifest = make_dataset(tmp_path, n_images=4, shape=(64, 64), splits=(3, 1, 0), seed=0)
    args = ["--seconds", "2", "--sizes", "32", "--rounds", "1", "--batch-size", "2", "--base-filters", "4",
            "--depth", "2", "--manifest", str(manifest), "--arm", "f32:mixed_precision='off'"]
    assert _load("bench_train").main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    patches = {line.split()[3].rstrip(":"): int(line.split()[4]) for line in lines if " round 0 " in line}
    assert set(patches) == {"plain", "package", "f32"} and min(patches.values()) >= 2  # every arm trained
    ratio = float(lines[-1].split("=")[1])
    assert lines[-1].startswith("train_to_plain_ratio_32=") and ratio > 0


@pytest.mark.slow
def test_bench_data_prints_its_ratio(capsys):
    _load("bench_data").main(["--patch-size", "32", "--batch-size", "2", "--seconds", "0.5"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("data_to_train_ratio=")


# ---------------------------------------------------------------------------------------- bench_instances
def _instance_set(root: Path, splits: tuple[str, ...], shape=(64, 64)) -> Path:
    """A data-set folder of synthetic nuclei with uint16 instance-label masks and a manifest (one row per split)."""
    import numpy as np

    from cellseg_tf.data.io import write_png, write_tiff
    from cellseg_tf.data.manifest import write_manifest
    from cellseg_tf.data.synthetic import nuclei_image

    rng = np.random.default_rng(3)
    rows = []
    for i, split in enumerate(splits):
        image, labels = nuclei_image(shape, n_nuclei=8, rng=rng)
        rows.append({"image": str(write_tiff(root / "images" / f"n{i}.tif", image)),
                     "mask": str(write_png(root / "masks" / f"n{i}.png", labels.astype(np.uint16))),
                     "split": split})
    return write_manifest(root / "manifest.csv", rows)


def test_bench_instances_scores_label_files_with_the_package_evaluation(tmp_path):
    import numpy as np

    from cellseg_tf.data.io import open_manifest, read_mask, write_tiff

    bench = _load("bench_instances")
    test = open_manifest(_instance_set(tmp_path / "set", ("test", "test")))
    truths = [read_mask(s.mask, instances=True) for s in test]
    exact = {s.image: write_tiff(tmp_path / "exact" / f"{s.stem}.tif", t.astype(np.uint16))
             for s, t in zip(test, truths)}
    scores = bench.score_labels(test, exact)
    assert scores["f1"] == scores["f1_pooled"] == scores["map"] == scores["dice"] == 1.0
    # every odd-numbered cell missed: precision stays 1, recall is the share of cells kept, per image
    halved = {s.image: write_tiff(tmp_path / "half" / f"{s.stem}.tif", np.where(t % 2 == 0, t, 0).astype(np.uint16))
              for s, t in zip(test, truths)}
    kept = [np.mean(np.unique(t[t > 0]) % 2 == 0) for t in truths]
    half = bench.score_labels(test, halved)
    assert half["precision"] == 1.0 and half["recall"] == pytest.approx(np.mean(kept))
    assert half["f1"] == pytest.approx(np.mean([2 * k / (1 + k) for k in kept])) and half["dice"] < 1.0
    with pytest.raises(FileNotFoundError, match="no prediction"):
        bench.score_labels(test, {})


def test_bench_instances_splits_share_val_rows_and_flag_a_single_image_as_sanity_check(tmp_path):
    bench = _load("bench_instances")
    splits = bench.prepare_splits("s", _instance_set(tmp_path / "s", ("train",) * 5 + ("test",)), tmp_path / "out")
    assert len(splits.train) == 4 and len(splits.val) == 1 and len(splits.test) == 1 and not splits.sanity
    written = splits.train_csv.read_text().splitlines()
    assert sum(line.endswith(",val") for line in written) == 1       # StarDist validates on the same held-out row
    assert splits.val[0].image not in {s.image for s in splits.train}
    one = bench.prepare_splits("one", _instance_set(tmp_path / "one", ("train",)), tmp_path / "out1")
    assert one.sanity and [s.image for s in one.test] == [s.image for s in one.train] == [one.val[0].image]


def test_bench_instances_reports_a_missing_stardist_venv_instead_of_crashing(tmp_path):
    ok, why = _load("bench_instances").stardist_status(tmp_path / "no-venv")
    assert not ok and "bench-instances-deps" in why


@pytest.mark.slow
def test_bench_instances_runs_package_arms_end_to_end(tmp_path, capsys):
    import json

    bench = _load("bench_instances")
    _instance_set(tmp_path / "data" / "tiny", ("train",) * 3 + ("test",))
    tiny = ["--set", "patch_size=32", "--set", "batch_size=2", "--set", "steps_per_epoch=2", "--set", "epochs=2",
            "--set", "model_options={base_filters: 4, depth: 2}"]
    assert bench.main(["--minutes", "0.05", "--sets", "tiny", "--arms", "binary,distance", "--data",
                       str(tmp_path / "data"), "--out", str(tmp_path / "out")] + tiny) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in lines[-2:]]
    assert [(r["set"], r["arm"]) for r in rows] == [("tiny", "binary"), ("tiny", "distance")]
    for r in rows:
        assert 0.0 <= float(r["f1"]) <= 1.0 and 0.0 <= float(r["dice"]) <= 1.0 and int(r["patches"]) >= 2
    assert (tmp_path / "out" / "tiny" / "distance" / "run" / "instances.yaml").is_file()   # tuned on val
    assert (tmp_path / "out" / "tiny" / "binary" / "labels" / "n3.tif").is_file()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["arm"] for r in saved["results"]] == ["binary", "distance"]

    # --reuse: the trained models are kept (not trained again), re-tuned and re-scored; patches from the first run
    model = tmp_path / "out" / "tiny" / "distance" / "run" / "best.keras"
    stamp = model.stat().st_mtime_ns
    assert bench.main(["--minutes", "0.05", "--sets", "tiny", "--arms", "binary,distance", "--data",
                       str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--reuse"] + tiny) == 0
    again = [dict(kv.split("=", 1) for kv in line.split())
             for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert model.stat().st_mtime_ns == stamp
    assert [r["patches"] for r in again] == [r["patches"] for r in rows]
    assert [r["f1"] for r in again] == [r["f1"] for r in rows]         # same models, same tuning, same scores
    notes = [r["note"] for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]]
    assert all(n.startswith("reused model") for n in notes)


@pytest.mark.slow
def test_bench_fewshot_leaves_one_dataset_out_and_prints_the_goals(tmp_path, capsys):
    from cellseg_tf.data.synthetic import make_dataset

    for i, name in enumerate(("set_a", "set_b")):
        make_dataset(tmp_path / "data" / name, n_images=5, shape=(96, 96), splits=(3, 0, 2), seed=10 + i)
    assert _load("bench_fewshot").main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quick",
                                        "--minutes", "0.02", "--shots", "1", "--draws", "1",
                                        "--extractor-depth", "3"]) == 0
    out = capsys.readouterr().out
    assert "goal BFGS >= logistic" in out and "goal bfgs > scratch U-Net" in out
    assert "goal adapted model >= logistic (adapted)" in out and "goal adapted > scratch U-Net" in out
    import pandas as pd

    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(results.target) == {"set_a", "set_b"}
    assert set(results.method) == {"full", "logistic", "bfgs", "adapted", "scratch"}
    assert results.dice.between(0, 1).all()
    # "adapted" is the model adapt() saves: the Dice of the solution its report says it kept
    by = results.set_index(["target", "method"])["dice"]
    for target, chosen in results[results.method == "adapted"][["target", "chosen"]].itertuples(index=False):
        assert by[(target, "adapted")] == by[(target, chosen)]
    import yaml

    # the features: the other set's MSD extractor and its full-training U-Net (reference (b), reused)
    report = yaml.safe_load((tmp_path / "out" / "adapted" / "set_a" / "k1_s0_adaptation.yaml").read_text())
    assert [e["path"] for e in report["extractors"]] == [str(tmp_path / "out" / p / "set_b" / "best.keras")
                                                         for p in ("extractors", "full")]

    # --resume keeps the extractors, the full-training references and the finished draws; runs only what is new
    extractors = sorted((tmp_path / "out" / "extractors").glob("*/best.keras"))
    stamps = [p.stat().st_mtime_ns for p in extractors]
    assert _load("bench_fewshot").main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quick",
                                        "--minutes", "0.02", "--shots", "2,1", "--draws", "1",
                                        "--extractor-depth", "3", "--skip-scratch", "--resume",
                                        "--compare-filters", "1,2", "--compare-pooled-dice", "--compare-msd-only",
                                        "--compare-anchor",
                                        "--compare-feature-levels", "2", "--val-rows", "1"]) == 0
    assert [p.stat().st_mtime_ns for p in extractors] == stamps
    resumed = pd.read_csv(tmp_path / "out" / "results.csv")
    key = ["target", "shots", "draw", "method"]
    pd.testing.assert_frame_equal(resumed.iloc[:len(results)].reset_index(drop=True), results)  # kept as they were
    new = resumed.iloc[len(results):]
    assert not resumed.duplicated(key).any() and new.val_dice.between(0, 1).all()    # held-out train rows scored
    compared = {f"{m}_{v}" for m in ("logistic", "bfgs", "adapted")
                for v in ("filters", "pooled", "msd", "levels2", "anchor")}
    assert set(new[new.shots == 1].method) == compared                              # only the new variants at K=1
    assert set(new[new.shots == 2].method) == {"logistic", "bfgs", "adapted"} | compared
    printed = capsys.readouterr().out
    assert "goal BFGS >= logistic (bfgs_filters)" in printed and "goal BFGS >= logistic (bfgs_pooled)" in printed
    anchored = yaml.safe_load((tmp_path / "out" / "adapted" / "set_a" / "k1_s0_anchor_adaptation.yaml").read_text())
    assert anchored["dice_anchor"] == "logistic" and report["dice_anchor"] == "zero"
    msd_only = yaml.safe_load((tmp_path / "out" / "adapted" / "set_a" / "k1_s0_msd_adaptation.yaml").read_text())
    assert [e["path"] for e in msd_only["extractors"]] == [report["extractors"][0]["path"]]
    levels = yaml.safe_load((tmp_path / "out" / "adapted" / "set_a" / "k1_s0_levels2_adaptation.yaml").read_text())
    assert [e["strides"] for e in levels["extractors"]] == [[1], [1, 2]]     # the MSD has no coarser maps
    # a model equal (architecture and weights) to one already scored in its draw is not predicted again
    import keras

    bench = _load("bench_fewshot")
    saved = [p for p in sorted((tmp_path / "out" / "adapted" / "set_a").glob("k2_s0*.keras"))
             if p.stem.endswith(("_logistic", "_bfgs"))]
    assert len(saved) == 12                                               # 6 variants x (logistic, bfgs)
    fingerprints = {bench.model_fingerprint(keras.models.load_model(p)) for p in saved}
    predicted = [p for p in (tmp_path / "out" / "pred" / "set_a").glob("k2_s0*") if not p.name.endswith("_val")]
    assert len(predicted) == len(fingerprints)

    # the validation-only screen reuses the run's extractors and never predicts the test split
    assert _load("screen_fewshot").main(["--bench", str(tmp_path / "out"), "--data", str(tmp_path / "data"),
                                         "--out", str(tmp_path / "screen"), "--config", "ref:",
                                         "--config", "tiles2:max_tiles=2,max_pixels=400", "--shots", "1",
                                         "--seeds", "1", "--val-rows", "1", "--solutions"]) == 0
    screen = pd.read_csv(tmp_path / "screen" / "screen.csv")
    assert len(screen) == 4 and screen.val_dice.between(0, 1).all()
    for _, r in screen.iterrows():                    # the kept solution scores as that solution on its own
        assert r.val_dice == pytest.approx(r[f"val_{r.chosen}"], abs=1e-6)
    small = yaml.safe_load((tmp_path / "screen" / "set_a" / "k1_s0_tiles2_adaptation.yaml").read_text())
    assert small["max_tiles"] == 2 and small["sampled"]["pixels"] <= 400
    from cellseg_tf.data.io import open_manifest
    from cellseg_tf.data.manifest import select

    rows = {split: {Path(r.image).stem for n in ("set_a", "set_b")
                    for r in select(open_manifest(tmp_path / "data" / n / "manifest.csv"), split)}
            for split in ("train", "test")}
    predicted = {p.name[:len("nuclei_000")] for p in (tmp_path / "screen" / "pred").rglob("nuclei_*")}
    assert predicted and predicted <= rows["train"] and not predicted & rows["test"]    # validation rows only
    printed = capsys.readouterr().out
    assert "config=tiles2 mean_val_dice=" in printed and "config=ref kept_vs_solutions" in printed


def test_bench_fewshot_fingerprints_models_by_architecture_and_weights():
    import keras
    import numpy as np

    bench = _load("bench_fewshot")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="head")(inputs))
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    assert bench.model_fingerprint(twin) == bench.model_fingerprint(model)
    kernel, bias = twin.get_weights()
    twin.set_weights([kernel, bias + np.float32(1e-6)])                  # one weight moved
    assert bench.model_fingerprint(twin) != bench.model_fingerprint(model)
    wider = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", name="head")(inputs))
    assert bench.model_fingerprint(wider) != bench.model_fingerprint(model)


def test_bench_fewshot_extractors_of_a_target_are_the_other_sets_models_in_set_order():
    """bench_fewshot and screen_fewshot give a target the same extractors: never the target's own models."""
    bench = _load("bench_fewshot")
    msds = {"c": Path("msd/c"), "a": Path("msd/a"), "b": Path("msd/b")}
    unets = {"b": Path("unet/b"), "a": Path("unet/a")}
    assert bench.target_extractors(msds, unets, "a") == ([str(Path("msd/b")), str(Path("msd/c"))],
                                                         [str(Path("unet/b"))])
    assert bench.target_extractors(msds, {}, "c") == ([str(Path("msd/a")), str(Path("msd/b"))], [])


def test_bench_fewshot_goal_lines_of_a_references_only_run():
    """--draws 0 trains the extractors and references only (to resume later): its summary says so, no crash."""
    import pandas as pd

    bench = _load("bench_fewshot")
    frame = pd.DataFrame([{"target": "a", "shots": 20, "draw": -1, "seed": -1, "method": "full", "dice": 0.8,
                           "seconds": 720.0}])
    assert bench.goal_lines(frame, bench.summarize(frame)) == [bench.NO_DRAWS]


def test_screen_fewshot_parses_adaptation_settings_and_counts_draws():
    screen = _load("screen_fewshot")
    name, assignments = screen.parse_candidate("small:max_tiles=4,lambdas=[1e-4, 1e-3],max_pixels=20000")
    assert name == "small"
    assert screen.adapt_overrides(assignments) == {"max_tiles": 4, "lambdas": [1e-4, 1e-3], "max_pixels": 20000}
    assert screen.adapt_overrides(["dice_average=pooled", "lambdas=[1.0e-3, 1e-2]"]) == {
        "dice_average": "pooled", "lambdas": [1e-3, 1e-2]}                   # 1e-2: a string to YAML 1.1
    with pytest.raises(ValueError, match="max_tile"):
        screen.adapt_overrides(["max_tile=4"])
    with pytest.raises(ValueError, match="shots"):            # set by the screen itself, per draw
        screen.adapt_overrides(["shots=3"])
    import pandas as pd

    frame = pd.DataFrame({"target": ["a"] * 4 + ["b"] * 4, "seed": [0, 0, 1, 1] * 2,
                          "config": ["ref", "new"] * 4, "val_dice": [0.5, 0.6, 0.7, 0.6, 0.8, 0.8, 0.4, 0.3],
                          "seconds": [10.0, 5.0] * 4})
    lines = screen.summarize(frame, "ref")
    assert lines[0].startswith("config=ref mean_val_dice=0.6000 mean_seconds=10.0")
    assert "config=new mean_val_dice=0.5750 mean_seconds=5.0 median_seconds=5.0 draws_ge_ref=2/4" in lines[1]
    assert "a=0.6000 b=0.5500" in lines[1]


# ---------------------------------------------------------------------------------------- bench_real
def test_bench_real_picks_on_validation_and_ignores_the_test_split():
    pick_arm = _load("bench_real").pick_arm
    # test Dice says "defaults" everywhere; validation says "wide" on average (wins one set, loses one narrowly)
    rows = [{"set": "a", "arm": "plain", "val_dice": 0.60, "test_dice": 0.90},
            {"set": "a", "arm": "defaults", "val_dice": 0.70, "test_dice": 0.95},
            {"set": "a", "arm": "wide", "val_dice": 0.80, "test_dice": 0.10},
            {"set": "b", "arm": "plain", "val_dice": 0.50, "test_dice": 0.90},
            {"set": "b", "arm": "defaults", "val_dice": 0.72, "test_dice": 0.95},
            {"set": "b", "arm": "wide", "val_dice": 0.70, "test_dice": 0.10}]
    choice = pick_arm(rows)
    assert choice["picked"] == "wide" and choice["mean_val_dice"]["wide"] == pytest.approx(0.75)
    assert choice["beats_defaults"] == {"plain": 0, "defaults": 0, "wide": 1} and choice["sets"] == ["a", "b"]
    flipped = [{**r, "test_dice": 1.0 - r["test_dice"]} for r in rows]
    assert pick_arm(flipped)["picked"] == "wide"                     # test scores change nothing
    # a set validated on its training images counts only when no other set is left
    sanity = rows + [{"set": "one", "arm": a, "val_dice": v} for a, v in
                     (("plain", 0.99), ("defaults", 0.1), ("wide", 0.1))]
    assert pick_arm(sanity, skip_sets=["one"])["picked"] == "wide"
    only = pick_arm([r for r in sanity if r["set"] == "one"], skip_sets=["one"])
    assert only["picked"] == "plain" and only["val_is_train_only"]


def test_bench_real_candidate_keeps_commas_inside_yaml_values():
    parse = _load("bench_real").parse_candidate
    assert parse("small:model_options={base_filters: 8, depth: 3},learning_rate=3e-3") == \
        ("small", ["model_options={base_filters: 8, depth: 3}", "learning_rate=3e-3"])
    for bad in ("defaults:epochs=2", "no-colon", "plain:x=1"):
        with pytest.raises(ValueError, match="--candidate"):
            parse(bad)


def _tiny_real_sets(tmp_path) -> list[str]:
    """A 5-image synthetic set `tiny` under tmp_path/data and the bench_real arguments that run it in seconds."""
    from cellseg_tf.data.synthetic import make_dataset

    make_dataset(tmp_path / "data" / "tiny", n_images=5, shape=(64, 64), splits=(2, 1, 2), seed=0)
    return ["--sets", "tiny", "--data", str(tmp_path / "data"), "--set", "patch_size=32", "--set", "batch_size=2",
            "--set", "steps_per_epoch=2", "--set", "model_options={base_filters: 4, depth: 2}"]


def test_bench_real_runs_every_arm_and_reports_the_validation_choice(tmp_path, capsys):
    import json
    import math

    import pandas as pd

    out = tmp_path / "out"
    assert _load("bench_real").main(["--minutes", "0.03", "--out", str(out),
                                     "--candidate", "fast:learning_rate=3e-3,schedule=constant"]
                                    + _tiny_real_sets(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    saved = json.loads((out / "results.json").read_text())
    rows = {r["arm"]: r for r in saved["results"]}
    assert list(rows) == ["plain", "defaults", "fast"]
    for r in rows.values():
        for key in ("val_dice", "test_dice", "test_boundary_dice"):
            assert math.isfinite(r[key]) and 0.0 <= r[key] <= 1.0
        assert r["patches"] >= 2 and r["train_s"] > 0
        for split, n in (("val", 1), ("test", 2)):
            report = pd.read_csv(r[f"{split}_csv"])
            assert len(report) == n and {"image", "dice", "boundary_dice"} <= set(report.columns)
            assert report["dice"].mean() == pytest.approx(r[f"{split}_dice"])
    assert rows["fast"]["overrides"][-2:] == ["learning_rate=3e-3", "schedule=constant"]
    best = max(rows, key=lambda a: rows[a]["val_dice"])
    final = dict(kv.split("=", 1) for kv in lines[-1].split())
    assert final["picked"] == best == saved["choice"]["picked"] and final["minutes"] == "0.03"
    assert float(final["mean_val_dice"]) == pytest.approx(rows[best]["val_dice"], abs=1e-4)
    kv = [dict(p.split("=", 1) for p in line.split()) for line in lines[-4:-1]]
    assert [(k["set"], k["arm"]) for k in kv] == [("tiny", "plain"), ("tiny", "defaults"), ("tiny", "fast")]
    pairs = {(s["arm"], s["reference"]) for s in saved["significance"]}
    assert pairs == {("defaults", "plain"), ("fast", "plain"), ("fast", "defaults")}
    assert all(s["n"] == 2 and s["wins"] + s["ties"] + s["losses"] == 2 for s in saved["significance"])


def test_bench_real_skip_plain_compares_candidates_with_the_defaults_only(tmp_path, capsys):
    import json

    out = tmp_path / "out"
    assert _load("bench_real").main(["--minutes", "0.02", "--out", str(out), "--skip-plain",
                                     "--candidate", "zoom:augmentation=default_scale_blur"]
                                    + _tiny_real_sets(tmp_path)) == 0
    saved = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in saved["results"]] == ["defaults", "zoom"]
    assert {(s["arm"], s["reference"]) for s in saved["significance"]} == {("zoom", "defaults")}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("picked=")
