"""Instance post-processing grid search: scores equal the direct computation, the best point wins, files round-trip."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cellseg_tf.predict.instance_params import InstanceParams, load_instance_params, run_tta
from cellseg_tf.predict.instances import labels_from_maps, mask_labels
from cellseg_tf.predict.matching import instance_scores
from cellseg_tf.predict.tuning import GRID_COLUMNS, default_grid, panoptic_quality, tune_instances, write_tuning


def _cells(seed: int, size: int = 72, n: int = 7):
    """Truth labels of touching discs (some small) and noisy distance maps predicted for them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    t = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(3, 10)
        t[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (t == 0)] = i
    t = mask_labels(t)[0]  # renumber if a disc was swallowed whole
    fg = (t > 0).astype(np.float32)
    dist = np.zeros_like(fg)
    for i in range(1, t.max() + 1):
        d = ndimage.distance_transform_edt(t == i)
        dist += (d / max(d.max(), 1)).astype(np.float32)
    noise = rng.normal(0, 0.15, (2, size, size)).astype(np.float32)
    maps = np.clip(np.stack([ndimage.gaussian_filter(fg, 1) + noise[0], dist + noise[1] * 0.5], -1), 0, 1)
    return t, maps


def test_grid_scores_equal_direct_labelling_and_scoring():
    data = [_cells(s) for s in range(3)]
    truths, maps = [d[0] for d in data], [d[1] for d in data]
    grid = {"fg_threshold": (0.4, 0.5, 0.6), "seed_threshold": (0.3, 0.5, 0.7), "seed_h": (0.0, 0.2),
            "merge_threshold": (0.3, 1.0), "small_fraction": (0.0, 0.3), "min_size": (0, 16, 60)}
    result = tune_instances(maps, truths, "distance", grid)
    assert list(result.grid.columns) == GRID_COLUMNS and len(result.grid) == 216
    for _, row in result.grid.iterrows():
        params = InstanceParams(fg_threshold=row.fg_threshold, seed_threshold=row.seed_threshold, seed_h=row.seed_h,
                                min_size=int(row.min_size), merge_threshold=row.merge_threshold,
                                small_fraction=row.small_fraction)
        scores = [instance_scores(t, labels_from_maps(m, "distance", params)) for t, m in zip(truths, maps)]
        assert (row.tp, row.fp, row.fn) == (sum(s.tp for s in scores), sum(s.fp for s in scores),
                                            sum(s.fn for s in scores)), row.to_dict()
        summed_iou = sum(s.tp * s.mean_matched_iou for s in scores)
        assert row.sum_matched_iou == pytest.approx(summed_iou)
        assert row.pq == pytest.approx(summed_iou / (row.tp + 0.5 * row.fp + 0.5 * row.fn))
    assert result.objective == "pq" and result.pq == result.grid.pq.max() == result.score
    best = result.grid.iloc[0]
    assert (result.params.fg_threshold, result.params.seed_threshold, result.params.seed_h, result.params.min_size,
            result.params.merge_threshold, result.params.small_fraction) == \
        (best.fg_threshold, best.seed_threshold, best.seed_h, best.min_size, best.merge_threshold,
         best.small_fraction)
    # the defaults are a grid point, so the search finds something at least as good, by either objective
    by_f1 = tune_instances(maps, truths, "distance", grid, objective="f1")
    assert by_f1.f1 == by_f1.grid.f1.max() == by_f1.score and by_f1.grid.pq.max() == result.pq
    default = [instance_scores(t, labels_from_maps(m, "distance")) for t, m in zip(truths, maps)]
    tp = sum(s.tp for s in default)
    fp, fn = sum(s.fp for s in default), sum(s.fn for s in default)
    assert by_f1.f1 >= 2 * tp / (2 * tp + fp + fn)
    assert result.pq >= panoptic_quality(tp, fp, fn, sum(s.tp * s.mean_matched_iou for s in default))


def test_pq_objective_prefers_fitting_outlines_where_f1_prefers_one_more_cell():
    """Six cells with a faint 2-px halo and one faint cell: fg 0.5 finds all seven but every haloed outline is
    too big (IoU 0.64); fg 0.6 misses the faint cell and fits the six exactly. F1@0.5 takes 0.5, PQ takes 0.6."""
    size = 120
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.int32)
    prob = np.zeros((size, size), np.float32)
    centres = [(20, 20), (20, 60), (20, 100), (60, 20), (60, 60), (60, 100), (100, 60)]
    for i, (cy, cx) in enumerate(centres, start=1):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        truth[r2 < 64] = i
        if i < len(centres):
            prob[r2 < 100] = 0.55                      # halo ring, 2 px wide
            prob[r2 < 64] = 0.9
        else:
            prob[r2 < 64] = 0.55                       # the faint cell
    grid = {"fg_threshold": (0.5, 0.6), "small_fraction": (0.0,), "min_size": (0,)}
    by_f1 = tune_instances([prob], [truth], "binary", grid, objective="f1")
    by_pq = tune_instances([prob], [truth], "binary", grid, objective="pq")
    assert by_f1.params.fg_threshold == 0.5 and by_f1.f1 == 1.0
    assert by_pq.params.fg_threshold == 0.6 and by_pq.f1 == pytest.approx(12 / 13)
    assert by_pq.pq == pytest.approx(12 / 13) and by_f1.pq < 0.75
    with pytest.raises(ValueError, match="unknown tuning objective"):
        tune_instances([prob], [truth], "binary", grid, objective="dice")


def test_binary_grid_has_no_seed_axis_and_min_size_removes_noise():
    t, maps = _cells(5)
    speckled = maps.copy()
    speckled[::9, ::9, 0] = 1.0                                 # isolated 1-px false positives
    result = tune_instances([speckled], [t], "binary", {"fg_threshold": (0.5,)})
    assert default_grid("binary")["seed_threshold"] == (InstanceParams().seed_threshold,)
    assert default_grid("binary")["merge_threshold"] == (1.0,)          # binary maps have no borders to judge
    assert len(result.grid) == len(default_grid("binary")["min_size"]) * len(default_grid("binary")["small_fraction"])
    assert result.params.min_size > 0                            # the speckles cost precision at min_size 0
    zero = result.grid[(result.grid.min_size == 0) & (result.grid.small_fraction == 0)].iloc[0]
    assert zero.fp > result.grid.iloc[0].fp


def test_write_tuning_files(tmp_path):
    t, maps = _cells(1)
    result = tune_instances([maps], [t], "distance", {"fg_threshold": (0.5,), "seed_threshold": (0.4, 0.6)})
    yaml_path, grid_path = write_tuning(tmp_path, result, "distance")
    assert load_instance_params(yaml_path) == result.params
    import yaml
    info = yaml.safe_load(yaml_path.read_text())["tuning"]
    assert info["kind"] == "distance" and info["val_f1"] == pytest.approx(result.f1) and info["val_images"] == 1
    assert info["objective"] == "pq" and info["val_pq"] == pytest.approx(result.pq)
    pd.testing.assert_frame_equal(pd.read_csv(grid_path), result.grid, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances.yaml", "instances_grid.csv"]  # no temp files


def test_tune_instances_rejects_bad_input():
    t, maps = _cells(2)
    with pytest.raises(ValueError, match="unknown target kind"):
        tune_instances([maps], [t], "stardist")
    with pytest.raises(ValueError, match="one truth per map"):
        tune_instances([maps], [], "distance")


def test_tune_run_uses_the_validation_split_and_writes_the_run_files(tmp_path):
    """A pass-through distance model (see test_instances) on a run folder: val images only, files written."""
    from cellseg_tf.data.io import write_png, write_tiff
    from cellseg_tf.data.manifest import write_manifest
    from cellseg_tf.predict.instance_params import run_instance_params, run_tta
    from cellseg_tf.predict.tuning import tune_run, validation_samples
    from cellseg_tf.training.config import TrainConfig
    from tests.test_instances import _cell_field, _maps_model

    rows = []
    for k, split in enumerate(("train", "val", "val", "test")):
        t, image = _cell_field((64 + 8 * k, 96))
        write_tiff(tmp_path / "data" / f"img{k}.tif", np.round(image * 1000).astype(np.uint16))
        write_png(tmp_path / "data" / f"mask{k}.png", t.astype(np.uint16))
        rows.append({"image": str(tmp_path / "data" / f"img{k}.tif"), "mask": str(tmp_path / "data" / f"mask{k}.png"),
                     "split": split})
    write_manifest(tmp_path / "manifest.csv", rows)
    run = tmp_path / "run"
    TrainConfig(manifest=str(tmp_path / "manifest.csv"), channels=3, norm_low=0, norm_high=100).save(
        run / "config.yaml")
    _maps_model().save(run / "best.keras")
    assert [s.image for s in validation_samples(run)] == [rows[1]["image"], rows[2]["image"]]
    grid = {"fg_threshold": (0.5,), "seed_threshold": (0.0, 0.5), "seed_h": (0.0,), "min_size": (0, 16)}
    result = tune_run(run, grid=grid, progress=False, scales=(1.0,))
    assert result.n_images == 2 and result.f1 == 1.0 and result.scales == (1.0,)
    assert result.params.seed_threshold == 0.5                # seeds at 0 merge every touching pair
    assert result.grid[result.grid.seed_threshold == 0.0].f1.max() < 0.5
    assert run_instance_params([run / "best.keras"]) == result.params
    assert (run / "instances_grid.csv").is_file()
    # tta "auto" tuned both; d4 of a pass-through model gives the same maps, so it is not better and not kept
    assert result.tta == "none" and run_tta([run / "best.keras"]) == "none"
    # by default each val image is also scored shrunk to 0.7x (smaller cells), recorded in instances.yaml
    import yaml

    from cellseg_tf.predict.options import PredictOptions

    shrunk = tune_run(run, grid=grid, progress=False, options=PredictOptions(tta="none"))
    assert shrunk.n_images == 4 and shrunk.scales == (1.0, 0.7)
    assert yaml.safe_load((run / "instances.yaml").read_text())["tuning"]["val_scales"] == [1.0, 0.7]
    with pytest.raises(ValueError, match="scales"):
        tune_run(run, grid=grid, progress=False, scales=(0.0,))


def test_prediction_tta_auto_follows_the_runs_validated_choice(tmp_path):
    """PredictOptions(tta="auto") -> the `tta` the run's tuning saved; explicit modes win; no run file -> none."""
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.instance_params import save_instance_params
    from cellseg_tf.predict.options import PredictOptions
    from tests.test_instances import _maps_model

    run = tmp_path / "run"
    run.mkdir()
    _maps_model().save(run / "best.keras")
    assert Predictor.from_files([run / "best.keras"]).options.tta == "none"
    save_instance_params(run / "instances.yaml", InstanceParams(), kind="distance", tta="d4")
    assert run_tta([run / "best.keras"]) == "d4"
    assert Predictor.from_files([run / "best.keras"]).options.tta == "d4"
    assert Predictor.from_files([run / "best.keras"], PredictOptions(tta="flip")).options.tta == "flip"
    assert Predictor([_maps_model()]).options.tta == "none"          # in-memory models: nothing to ask
    with pytest.raises(ValueError, match="tta must be one of"):
        PredictOptions(tta="d8").validate()


def test_cli_train_on_label_masks_tunes_the_cells(tmp_path, capsys):
    """`cellseg-tf train` on instance-label masks trains the instance target and writes RUN/instances.yaml."""
    from cellseg_tf.cli import main
    from cellseg_tf.data.synthetic import make_dataset

    manifest = make_dataset(tmp_path / "data", n_images=5, shape=(128, 128), splits=(3, 1, 1), instance_masks=True)
    run = tmp_path / "run"
    main(["train", "--manifest", str(manifest), "--out", str(run), "--epochs", "1", "--steps-per-epoch", "2",
          "--patch-size", "64", "--batch-size", "2", "--verbose", "0"])
    out = capsys.readouterr().out
    assert "target=distance" in out and "val_instance_f1=" in out
    assert load_instance_params(run / "instances.yaml") is not None
    assert (run / "instances_grid.csv").is_file()
    import yaml

    assert yaml.safe_load((run / "instances.yaml").read_text())["tuning"]["objective"] == "pq"
    main(["tune", str(run), "--objective", "f1", "--quiet"])
    assert "objective=f1" in capsys.readouterr().out
    assert yaml.safe_load((run / "instances.yaml").read_text())["tuning"]["objective"] == "f1"

    main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "run2"), "--epochs", "1",
          "--steps-per-epoch", "1", "--patch-size", "64", "--batch-size", "2", "--verbose", "0", "--no-tune"])
    assert not (tmp_path / "run2" / "instances.yaml").exists()


def test_grid_has_a_seed_peak_axis_that_finds_the_split_a_threshold_cannot():
    """Touching cells whose cores merge above every seed threshold in the grid: only seed_h > 0 splits them, so the
    search picks it, and the grid rows equal direct labelling with that seed_h."""
    from tests.test_instances import _two_peak_cell

    cell = _two_peak_cell()
    truth = np.zeros(cell.shape[:2], np.int32)
    fg = cell[..., 0] > 0.5
    truth[fg & (np.arange(cell.shape[1])[None] < 40)] = 1        # the two halves are the two cells
    truth[fg & (np.arange(cell.shape[1])[None] >= 40)] = 2
    grid = {"fg_threshold": (0.5,), "seed_threshold": (0.3, 0.5), "seed_h": (0.0, 0.2), "merge_threshold": (1.0,),
            "small_fraction": (0.0,), "min_size": (0,)}
    result = tune_instances([cell], [truth], "distance", grid)
    assert "seed_h" in result.grid.columns and len(result.grid) == 4
    assert result.params.seed_h == 0.2 and result.f1 == 1.0
    assert result.grid[result.grid.seed_h == 0.0].f1.max() < 1.0
    for _, row in result.grid.iterrows():
        params = InstanceParams(fg_threshold=0.5, seed_threshold=row.seed_threshold, seed_h=row.seed_h, min_size=0)
        s = instance_scores(truth, labels_from_maps(cell, "distance", params))
        assert (row.tp, row.fp, row.fn) == (s.tp, s.fp, s.fn)
    assert default_grid("binary")["seed_h"] == (0.0,) and max(default_grid("distance")["seed_h"]) > 0
