"""Per-image evaluation: pixel scores, SSIM, Hausdorff/HD95, boundary Dice, instance columns, folder evaluation,
summaries and the `cellseg-tf evaluate` output — against hand-computed values, scipy and scikit-image."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist, directed_hausdorff

from cellseg_tf.analysis.evaluation import (METRIC_GROUPS, SCORE_COLUMNS, binary_scores, boundary_dice, evaluate_folder,
                                   hausdorff_distances, image_scores, mask_boundary, mask_ssim, prediction_path,
                                   summarize)
from cellseg_tf.data.io import ImageReadError, write_png
from cellseg_tf.data.manifest import Sample


def _square(shape=(32, 32), r0=8, c0=8, size=10):
    m = np.zeros(shape, np.uint8)
    m[r0:r0 + size, c0:c0 + size] = 1
    return m


def _blobs(seed, shape=(48, 48)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 3) > 0.52


# ------------------------------------------------------------------ pixel scores

def test_binary_scores_hand_computed():
    t = np.zeros((4, 5), np.uint8)
    t[0, :4] = 1                                   # 4 positives
    p = np.zeros_like(t)
    p[0, 1:3] = 1                                  # 2 TP
    p[3, :3] = 255                                 # 3 FP (any nonzero is foreground)
    s = binary_scores(p, t)                        # TP 2, FP 3, FN 2, TN 13
    assert s == pytest.approx({"dice": 4 / 9, "iou": 2 / 7, "precision": 2 / 5, "recall": 2 / 4,
                               "accuracy": 15 / 20, "f1": 4 / 9})
    with pytest.raises(ValueError, match="prediction is"):
        binary_scores(p, t[:3])


def test_binary_scores_against_sklearn_if_installed():
    skm = pytest.importorskip("sklearn.metrics")
    t, p = _blobs(0).ravel(), _blobs(1).ravel()
    s = binary_scores(p, t)
    assert s["dice"] == pytest.approx(skm.f1_score(t, p))
    assert s["iou"] == pytest.approx(skm.jaccard_score(t, p))
    assert s["precision"] == pytest.approx(skm.precision_score(t, p))
    assert s["recall"] == pytest.approx(skm.recall_score(t, p))
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(t, p))


def test_binary_empty_conventions():
    e, f = np.zeros((4, 4)), np.ones((4, 4))
    assert binary_scores(e, e) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0,
                                   "f1": 1.0}
    s = binary_scores(f, e)                        # everything a false positive
    assert (s["dice"], s["precision"], s["recall"], s["accuracy"]) == (0.0, 0.0, 1.0, 0.0)


# ------------------------------------------------------------------ SSIM

def test_ssim_matches_skimage_and_small_images():
    from skimage.metrics import structural_similarity

    a, b = _blobs(2), _blobs(3)
    assert mask_ssim(a, b) == pytest.approx(structural_similarity(a.astype(float), b.astype(float), data_range=1.0))
    assert mask_ssim(a, a) == pytest.approx(1.0)
    assert 0.0 < mask_ssim(np.eye(5), np.eye(5)[::-1]) < 1.0    # 5×5: window shrinks to 5
    assert np.isnan(mask_ssim(np.eye(2), np.eye(2)))


# ------------------------------------------------------------------ Hausdorff

def test_hausdorff_of_shifted_squares():
    a, b = _square(), _square(c0=11)               # shifted 3 px right
    hd, hd95 = hausdorff_distances(a, b)
    assert hd == pytest.approx(3.0)
    assert 0 < hd95 <= hd


def test_hausdorff_matches_skimage_and_brute_force():
    from skimage.metrics import hausdorff_distance

    for seed in range(3):
        a, b = _blobs(10 + seed), _blobs(20 + seed)
        hd, hd95 = hausdorff_distances(a, b)
        ba, bb = mask_boundary(a), mask_boundary(b)
        assert hd == pytest.approx(hausdorff_distance(ba, bb))
        pa, pb = np.argwhere(ba), np.argwhere(bb)
        assert hd == pytest.approx(max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]))
        d = cdist(pa, pb)
        assert hd95 == pytest.approx(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def test_hausdorff_empty_conventions():
    e = np.zeros((8, 8), np.uint8)
    assert hausdorff_distances(e, e) == (0.0, 0.0)
    assert all(np.isnan(hausdorff_distances(_square((8, 8), 2, 2, 3), e)))
    assert hausdorff_distances(e, _square((8, 8), 2, 2, 3), empty=99.0) == (99.0, 99.0)


def test_hausdorff_is_fast_on_a_large_mask():
    import time

    a = np.zeros((1024, 1024), np.uint8)
    a[100:900, 100:900] = 1
    b = np.roll(a, 5, axis=0)
    start = time.perf_counter()
    hd, _ = hausdorff_distances(a, b)
    assert hd == pytest.approx(5.0)
    assert time.perf_counter() - start < 5.0       # distance transforms, not a 3200×3200 pair matrix per call


# ------------------------------------------------------------------ boundary Dice (Beker et al.)

def test_boundary_dice_behaviour():
    a = _square((48, 48), 10, 10, 20)
    e = np.zeros_like(a)
    assert boundary_dice(a, a) == 1.0
    assert boundary_dice(e, e) == 1.0              # no edges in either
    assert boundary_dice(a, e) == 0.0
    near, far = boundary_dice(np.roll(a, 1, axis=1), a), boundary_dice(np.roll(a, 6, axis=1), a)
    assert 1.0 > near > 0.8 and far < near
    assert boundary_dice(_square((48, 48), 0, 0, 5), _square((48, 48), 40, 40, 5)) == 0.0
    # a small hole barely moves pixel Dice but adds an edge that the boundary score sees
    holed = a.copy()
    holed[18:22, 18:22] = 0
    assert binary_scores(holed, a)["dice"] > 0.97 and boundary_dice(holed, a) < 0.95


# ------------------------------------------------------------------ image_scores / instance columns

def test_image_scores_groups_and_instance_sources():
    t = np.zeros((16, 16), np.int32)
    t[2:10, 1:7], t[2:10, 7:11] = 1, 2             # touching cells, as labels
    row = image_scores((t > 0).astype(np.uint8) * 255, t)
    assert row["truth_instances"] == "labels" and row["pred_instances"] == "components"
    assert row["dice"] == 1.0 and row["instance_recall"] == 0.5 and row["n_pred_instances"] == 1
    assert set(SCORE_COLUMNS) <= set(row)
    only = image_scores(t > 0, t > 0, groups=("pixel",))
    assert "hausdorff" not in only and "instance_f1" not in only
    with pytest.raises(KeyError, match="available"):
        image_scores(t, t, groups=("pixel", "nope"))
    assert set(METRIC_GROUPS) == {"pixel", "ssim", "distance", "boundary", "instance"}


# ------------------------------------------------------------------ folders, summaries, CLI

def _write_case(tmp_path, n=3):
    """n truth label PNGs (uint16, two touching cells) and binary prediction PNGs; returns (samples, pred_dir)."""
    samples, pred_dir = [], tmp_path / "pred"
    for k in range(n):
        t = np.zeros((32, 32), np.uint16)
        t[4:20, 4:14], t[4:20, 14:20] = 1, 2
        img = tmp_path / f"img{k}.png"
        write_png(img, (t * 50).astype(np.uint8))
        write_png(tmp_path / f"mask{k}.png", t)
        pred = np.roll(t > 0, k, axis=1).astype(np.uint8) * 255
        write_png(pred_dir / f"img{k}.png", pred)
        samples.append(Sample(str(img), str(tmp_path / f"mask{k}.png"), "test", k + 2))
    return samples, pred_dir


def test_evaluate_folder_columns_values_and_errors(tmp_path):
    samples, pred_dir = _write_case(tmp_path)
    report = evaluate_folder(pred_dir, samples)
    assert len(report) == 3 and list(report.columns[:2]) == ["image", "prediction"]
    assert {"dice", "iou", "precision", "recall", "accuracy", "f1", "ssim", "hausdorff", "hausdorff95",
            "boundary_dice", "instance_f1", "map_50_95"} <= set(report.columns)
    assert report["dice"].iloc[0] == 1.0 and report["hausdorff"].iloc[0] == 0.0
    assert report["dice"].is_monotonic_decreasing
    assert (report["truth_instances"] == "labels").all() and (report["n_true_instances"] == 2).all()
    assert (report["n_pred_instances"] == 1).all()         # binary prediction merges the touching pair
    assert prediction_path(pred_dir, samples[0]) == pred_dir / "img0.png"

    (pred_dir / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match="img1.png"):
        evaluate_folder(pred_dir, samples)
    skipped = evaluate_folder(pred_dir, samples, on_error="skip")
    assert len(skipped) == 2 and "img1.png" in skipped.attrs["failures"][0]
    write_png(pred_dir / "img1.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(ImageReadError, match=r"img1.png.*16×32"):
        evaluate_folder(pred_dir, samples)


def test_summarize_skips_undefined_values():
    report = pd.DataFrame({"image": ["a", "b", "c"], "dice": [1.0, 0.5, 0.0], "hausdorff": [2.0, 4.0, np.nan]})
    s = summarize(report)
    assert s == {"n": 3, "mean_dice": 0.5, "mean_hausdorff": 3.0}


def test_cli_evaluate_prints_mean_dice_and_instance_f1_last(tmp_path, capsys):
    from cellseg_tf.cli import main

    samples, pred_dir = _write_case(tmp_path)
    rows = "\n".join(f"{s.image},{s.mask},test" for s in samples)
    (tmp_path / "manifest.csv").write_text(f"image,mask,split\n{rows}\n")
    out = tmp_path / "report.csv"
    assert main(["evaluate", "--pred", str(pred_dir), "--manifest", str(tmp_path / "manifest.csv"),
                 "--out", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = dict(item.split("=") for item in lines[-1].split())
    assert list(last) == ["mean_dice", "instance_f1"]
    report = pd.read_csv(out)
    assert float(last["mean_dice"]) == pytest.approx(report["dice"].mean(), abs=1e-4)
    tp, n_true, n_pred = (report[c].sum() for c in ("instance_tp", "n_true_instances", "n_pred_instances"))
    assert float(last["instance_f1"]) == pytest.approx(2 * tp / (n_true + n_pred), abs=1e-4)
    assert any(line.startswith("mean_map_50_95=") for line in lines)
    assert any(line.startswith("instance_map_50_95=") for line in lines)


def test_real_instance_masks(shared_data):
    """Usiigaci: labels score perfectly against themselves; their binarised mask (touching cells merged, stray
    annotation pixels split off as specks) does not, though its pixels are identical."""
    from cellseg_tf.data.io import read_mask

    truth = read_mask(shared_data / "usiigaci_phase" / "masks" / "set17.png", instances=True)
    perfect = image_scores(truth, truth, groups=("instance",))
    assert perfect["instance_f1"] == 1.0 and perfect["map_50_95"] == 1.0
    binary = image_scores((truth > 0).astype(np.uint8), truth, groups=("instance", "pixel"))
    assert binary["dice"] == 1.0 and binary["pred_instances"] == "components"
    assert binary["n_pred_instances"] != binary["n_true_instances"] and binary["instance_f1"] < 0.95


def test_evaluate_folder_binarises_anti_aliased_truth_at_mask_threshold(tmp_path):
    from cellseg_tf.analysis.evaluation import evaluate_folder
    from cellseg_tf.data.io import write_png
    from cellseg_tf.data.manifest import Sample

    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 255
    truth[4, 5:15] = 60            # an anti-aliased rim: not object at threshold 127
    pred = np.where(truth == 255, 255, 0).astype(np.uint8)
    write_png(tmp_path / "t.png", truth)
    write_png(tmp_path / "img.png", truth)
    write_png(tmp_path / "pred" / "img.png", pred)
    sample = Sample(str(tmp_path / "img.png"), str(tmp_path / "t.png"), "test", 2)
    strict = evaluate_folder(tmp_path / "pred", [sample], groups=("pixel",), mask_threshold=127)
    loose = evaluate_folder(tmp_path / "pred", [sample], groups=("pixel",))
    assert strict["dice"][0] == pytest.approx(1.0)
    assert loose["dice"][0] == pytest.approx(2 * 100 / (110 + 100))


def test_boundary_dice_equals_the_published_recipe_step_by_step():
    """Canny edges (OpenCV 100/200 on 0/255) -> 7×7 dilation (scipy here) -> Dice (by hand) of the two bands."""
    import cv2
    from scipy import ndimage

    rng = np.random.default_rng(11)
    truth = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((64, 64)), 3) > 0.5, iterations=2)
    pred = np.roll(truth, (2, -3), axis=(0, 1))
    bands = [ndimage.binary_dilation(cv2.Canny(m.astype(np.uint8) * 255, 100, 200) > 0, np.ones((7, 7), bool))
             for m in (pred, truth)]
    expected = 2 * (bands[0] & bands[1]).sum() / (bands[0].sum() + bands[1].sum())
    assert 0.3 < expected < 0.95
    assert boundary_dice(pred, truth) == pytest.approx(expected, rel=1e-9)
    assert boundary_dice(pred, truth, kernel=3) < boundary_dice(pred, truth)  # a wider band forgives more


def test_evaluate_folder_progress_bar_follows_verbose(tmp_path, capsys):
    from cellseg_tf.cli import main

    samples, pred_dir = _write_case(tmp_path)
    evaluate_folder(pred_dir, samples, groups=("pixel",), verbose=0)
    assert capsys.readouterr().err == ""
    evaluate_folder(pred_dir, samples, groups=("pixel",), verbose=1)
    err = capsys.readouterr().err
    assert "evaluate" in err and f"{len(samples)}/{len(samples)}" in err
    rows = "\n".join(f"{s.image},{s.mask},test" for s in samples)
    (tmp_path / "manifest.csv").write_text(f"image,mask,split\n{rows}\n")
    assert main(["evaluate", "--pred", str(pred_dir), "--manifest", str(tmp_path / "manifest.csv"),
                 "--out", str(tmp_path / "report.csv"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ saved instance labels, dataset-level scores

def test_saved_instance_labels_are_scored_when_present(tmp_path):
    from cellseg_tf.analysis.evaluation import instances_path
    from cellseg_tf.data.io import write_tiff

    samples, pred_dir = _write_case(tmp_path)
    before = evaluate_folder(pred_dir, samples, verbose=0)
    assert (before["pred_instances"] == "components").all() and (before["n_pred_instances"] == 1).all()
    t = np.zeros((32, 32), np.uint16)
    t[4:20, 4:14], t[4:20, 14:20] = 7, 9                       # the two touching cells, split (ids need not be 1, 2)
    write_tiff(instances_path(pred_dir, samples[0]), t)
    after = evaluate_folder(pred_dir, samples, verbose=0)
    assert after["pred_instances"].tolist() == ["saved", "components", "components"]
    assert after["instance_f1"][0] == 1.0 and after["n_pred_instances"][0] == 2
    assert after["dice"].tolist() == before["dice"].tolist()   # pixel scores still come from the mask PNG
    write_tiff(instances_path(pred_dir, samples[1]), t[:16])
    with pytest.raises(ImageReadError, match=r"img1_instances.tif.*16×32"):
        evaluate_folder(pred_dir, samples, verbose=0)


def test_summarize_sums_instance_counts_over_images():
    from cellseg_tf.predict.matching import MAP_THRESHOLDS, tp_column

    t = np.zeros((20, 20), np.int32)
    t[0:10, 0:10], t[12:17, 12:17] = 1, 2
    p = np.zeros_like(t)
    p[0:10, 0:8] = 1                                           # IoU 0.8
    p[18:20, 0:2] = 2                                          # a false positive
    rows = [image_scores(p, t, groups=("instance",)),          # TP 1, FP 1, FN 1
            image_scores(t, t, groups=("instance",))]          # TP 2, FP 0, FN 0
    for _ in range(3):                                         # three empty images: F1 = 1 each
        rows.append(image_scores(np.zeros_like(t), np.zeros_like(t), groups=("instance",)))
    s = summarize(pd.DataFrame(rows))
    assert (s["instance_tp"], s["instance_fp"], s["instance_fn"]) == (3, 1, 1)
    assert s["instance_f1"] == pytest.approx(6 / 8) and s["instance_precision"] == pytest.approx(3 / 4)
    assert s["mean_instance_f1"] == pytest.approx((0.5 + 1 + 3) / 5)   # per-image mean weighs empty images fully
    assert s["instance_ap50"] == pytest.approx(3 / 5)
    # above IoU 0.8 only the perfect image's two cells match: TP 2, FP 2, FN 2
    expected = [3 / 5 if thr <= 0.8 + 1e-9 else 2 / 6 for thr in MAP_THRESHOLDS]
    assert s["instance_map_50_95"] == pytest.approx(np.mean(expected))
    assert rows[0][tp_column(0.85)] == 0 and rows[1][tp_column(0.95)] == 2
