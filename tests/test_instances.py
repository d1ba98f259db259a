"""Instance scores: connected components, IoU matrix, optimal matching (incl. touching objects), P/R/F1 and mAP."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.predict.instance_params import (InstanceParams, load_instance_params, run_instance_params,
                                                save_instance_params)
from cellseg_tf.predict.instances import (as_label_image, is_label_image, label_components, label_image_dtype,
                                          labels_from_maps)
from cellseg_tf.predict.matching import (MAP_THRESHOLDS, instance_metrics, instance_scores, iou_matrix, match_ious,
                                         mean_average_precision)


def test_components_connectivity():
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 1
    m[3:5, 3:5] = 1                               # touches the first square at a corner only
    assert label_components(m, connectivity=1).max() == 2   # 4-connectivity: separate
    assert label_components(m).max() == 1                   # default 8-connectivity (as skimage.measure.label)
    assert label_components(m).dtype == np.int32
    with pytest.raises(ValueError, match="connectivity"):
        label_components(m, connectivity=3)


def test_is_label_image():
    assert not is_label_image(np.array([[0, 255], [255, 0]]))
    assert not is_label_image(np.zeros((3, 3), np.int32))
    assert is_label_image(np.array([[0, 1], [2, 0]]))


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, (20, 20)) * (rng.random((20, 20)) > 0.3)
    p = rng.integers(0, 5, (20, 20)) * 3                     # non-consecutive labels 0, 3, 6, 9, 12
    got = iou_matrix(t, p)
    tv, pv = [v for v in np.unique(t) if v], [v for v in np.unique(p) if v]
    ref = np.array([[np.sum((t == a) & (p == b)) / np.sum((t == a) | (p == b)) for b in pv] for a in tv])
    np.testing.assert_allclose(got, ref)
    with pytest.raises(ValueError, match="shape"):
        iou_matrix(t, p[:5])
    from cellseg_tf.predict.matching import consecutive_labels
    np.testing.assert_array_equal(iou_matrix(t, p, consecutive_labels(t)), got)   # the truth relabelled once


def _touching_truth():
    """Two touching cells of different size, as an instance label image (12×12): left 6 columns, right 4 columns."""
    t = np.zeros((12, 12), np.int32)
    t[2:10, 1:7] = 1
    t[2:10, 7:11] = 2
    return t


def test_touching_cells_merged_by_a_binary_prediction():
    t = _touching_truth()
    merged = label_components(t > 0)              # perfect pixels, but one blob
    assert merged.max() == 1
    s = instance_scores(t, merged)
    # the blob covers cell 1 with IoU 48/80 = 0.6 -> one TP; cell 2 (IoU 0.4) is missed
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert (s.precision, s.recall, s.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert s.mean_matched_iou == pytest.approx(0.6)


def test_touching_cells_split_correctly_and_with_a_shifted_border():
    t = _touching_truth()
    assert instance_scores(t, t).f1 == 1.0
    shifted = t.copy()
    shifted[2:10, 7] = 1                          # border one column to the right: IoUs 48/56 and 24/32
    s = instance_scores(t, shifted)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.mean_matched_iou == pytest.approx((48 / 56 + 24 / 32) / 2)
    # at threshold 0.8 only the big cell still matches
    assert instance_scores(t, shifted, threshold=0.8).tp == 1


def test_matching_is_optimal_not_greedy():
    # rows: true A, B; cols: predicted X, Y. Greedy (highest IoU first) takes A-X and then nothing fits;
    # the optimal one-to-one assignment at threshold 0.3 pairs A-Y and B-X.
    iou = np.array([[0.6, 0.35], [0.3, 0.0]])
    ti, pi = match_ious(iou, threshold=0.3)
    assert sorted(zip(ti.tolist(), pi.tolist())) == [(0, 1), (1, 0)]
    ti, pi = match_ious(iou, threshold=0.5)
    assert list(zip(ti.tolist(), pi.tolist())) == [(0, 0)]


def test_average_precision_over_thresholds():
    t = np.zeros((20, 20), np.int32)
    t[0:10, 0:10] = 1                             # 100 px
    t[12:17, 12:17] = 2                           # 25 px
    p = np.zeros_like(t)
    p[0:10, 0:8] = 5                              # IoU 80/100 = 0.8 with cell 1
    p[12:17, 12:16] = 7                           # IoU 20/25 = 0.8 with cell 2
    p[18:20, 0:2] = 9                             # a false positive
    m, aps = mean_average_precision(t, p)
    assert list(aps) == list(MAP_THRESHOLDS) and len(aps) == 10
    # t <= 0.8: TP=2, FP=1, FN=0 -> 2/3 (0.50 ... 0.80: 7 thresholds); above: 0/(0+3+2) = 0
    expected = [2 / 3 if thr <= 0.8 + 1e-9 else 0.0 for thr in MAP_THRESHOLDS]
    np.testing.assert_allclose(list(aps.values()), expected)
    assert m == pytest.approx(np.mean(expected))
    row = instance_metrics(t, p)
    assert row["ap50"] == pytest.approx(2 / 3) and row["map_50_95"] == pytest.approx(m)
    assert (row["n_true_instances"], row["n_pred_instances"], row["instance_tp"]) == (2, 3, 2)
    assert row["instance_precision"] == pytest.approx(2 / 3) and row["instance_recall"] == 1.0


def test_empty_conventions():
    empty = np.zeros((8, 8), np.int32)
    one = empty.copy()
    one[2:5, 2:5] = 1
    both = instance_scores(empty, empty)
    assert (both.precision, both.recall, both.f1, both.average_precision) == (1.0, 1.0, 1.0, 1.0)
    missed = instance_scores(one, empty)
    assert (missed.precision, missed.recall, missed.f1) == (1.0, 0.0, 0.0)
    spurious = instance_scores(empty, one)
    assert (spurious.precision, spurious.recall, spurious.f1) == (0.0, 1.0, 0.0)
    assert mean_average_precision(empty, empty)[0] == 1.0
    assert np.isnan(instance_metrics(one, empty)["matched_iou"])


# ------------------------------------------------------------------------------------------- maps -> labels
def _touching_discs(size=(64, 96), radius=15):
    """Two discs touching along a vertical chord: truth labels and their binary, contour and distance maps."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    yy, xx = np.mgrid[:size[0], :size[1]]
    t = np.zeros(size, np.int32)
    t[(yy - 32) ** 2 + (xx - 30) ** 2 < radius ** 2] = 1
    t[((yy - 32) ** 2 + (xx - 56) ** 2 < radius ** 2) & (t == 0)] = 2
    fg = (t > 0).astype(np.float32)
    dist = np.zeros_like(fg)
    for i in (1, 2):
        d = ndimage.distance_transform_edt(t == i)
        dist += (d / d.max()).astype(np.float32)
    boundary = find_boundaries(t, mode="inner").astype(np.float32)
    return t, fg, np.stack([fg, boundary], -1), np.stack([fg, dist], -1)


def test_touching_discs_binary_merges_contour_and_distance_split():
    t, fg, contour, distance = _touching_discs()
    assert label_components(t > 0).max() == 1                # the discs really touch
    assert labels_from_maps(fg, "binary").max() == 1
    for kind, maps in (("contour", contour), ("distance", distance)):
        labels = labels_from_maps(maps, kind)
        assert labels.dtype == np.int32 and labels.max() == 2, kind
        s = instance_scores(t, labels)
        assert (s.tp, s.fp, s.fn) == (2, 0, 0) and s.mean_matched_iou > 0.9, kind
        assert ((labels > 0) == (t > 0)).all(), kind           # watershed fills the whole foreground


def test_uint8_maps_give_the_same_labels():
    _, _, contour, distance = _touching_discs()
    for kind, maps in (("contour", contour), ("distance", distance)):
        q = np.round(maps * 255).astype(np.uint8)
        np.testing.assert_array_equal(labels_from_maps(q, kind), labels_from_maps(maps, kind))


def test_seed_threshold_controls_splitting():
    _, _, _, distance = _touching_discs()
    # the two cores merge once the seed threshold is below the distance value on the shared chord
    assert labels_from_maps(distance, "distance", InstanceParams(seed_threshold=0.01)).max() == 1
    assert labels_from_maps(distance, "distance", InstanceParams(seed_threshold=0.6)).max() == 2


def test_min_size_fill_holes_and_sequential_ids():
    m = np.zeros((40, 40), np.float32)
    m[2:14, 2:14] = 1.0
    m[6:9, 6:9] = 0.0                                         # a 9-px hole inside the first cell
    m[20:23, 20:23] = 1.0                                     # 9 px: below min_size 16
    m[30:38, 25:35] = 0.9
    labels = labels_from_maps(m, "binary", InstanceParams(min_size=16))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]    # small one dropped, ids renumbered 1..2
    assert labels[7, 7] == labels[3, 3] != 0                  # hole filled with its cell
    no_fill = labels_from_maps(m, "binary", InstanceParams(min_size=16, fill_holes=False))
    assert no_fill[7, 7] == 0
    assert labels_from_maps(m, "binary", InstanceParams(min_size=0)).max() == 3
    assert labels_from_maps(m, "binary", InstanceParams(fg_threshold=0.95, min_size=0)).max() == 2


def test_unseeded_component_is_kept_and_watershed_paths_agree(monkeypatch):
    from cellseg_tf.predict import instances

    _, _, _, distance = _touching_discs()
    maps = distance.copy()
    maps[5:12, 80:90, 0] = 1.0                                # a faint extra cell: foreground, no distance peak
    maps[5:12, 80:90, 1] = 0.2
    whole = labels_from_maps(maps, "distance", InstanceParams(min_size=1))
    assert whole.max() == 3 and (whole[5:12, 80:90] == 3).all()
    monkeypatch.setattr(instances, "WATERSHED_WHOLE_PX", 0)   # component-by-component flooding
    np.testing.assert_array_equal(labels_from_maps(maps, "distance", InstanceParams(min_size=1)), whole)


def test_every_target_kind_has_a_labeller():
    from cellseg_tf.data.targets import TARGETS
    from cellseg_tf.predict.instances import LABELLERS

    assert set(LABELLERS) == set(TARGETS)


def test_labels_from_maps_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown target kind"):
        labels_from_maps(np.zeros((4, 4, 2)), "stardist")
    with pytest.raises(ValueError, match=r"distance maps need shape \(H, W, >=2\)"):
        labels_from_maps(np.zeros((4, 4, 1)), "distance")
    with pytest.raises(ValueError, match="fg_threshold"):
        InstanceParams(fg_threshold=1.5)


def test_instance_params_yaml_round_trip(tmp_path):
    params = InstanceParams(fg_threshold=0.4, seed_threshold=0.7, min_size=30, fill_holes=False, connectivity=1)
    path = save_instance_params(tmp_path / "run" / "instances.yaml", params, kind="distance", val_f1=0.8)
    assert load_instance_params(path) == params
    assert run_instance_params([tmp_path / "run" / "epochs" / "epoch_001.keras"]) == params
    assert run_instance_params([tmp_path / "other" / "best.keras"]) == InstanceParams()
    assert params.replace(min_size=None, seed_threshold=0.3) == InstanceParams(0.4, 0.3, 30, False, 1)
    (tmp_path / "bad.yaml").write_text("fg_treshold: 0.4\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown instance parameter\(s\) \['fg_treshold'\]"):
        load_instance_params(tmp_path / "bad.yaml")


def test_label_image_dtype():
    assert label_image_dtype(65535) == np.uint16 and label_image_dtype(65536) == np.uint32
    labels = np.array([[0, 3], [70000, 1]], np.int32)
    assert as_label_image(labels).dtype == np.uint32 and as_label_image(labels)[1, 0] == 70000


# ------------------------------------------------------------------- through the predictor and the batch job
P = 32


def _maps_model(kind: str = "distance", bias: float = 0.0, size: int = P):
    """A per-pixel model that passes its input's first K channels through: logits 20·x - 10 (+ bias) -> TargetHead,
    so thresholding its output at 0.5 is thresholding the input at 0.5 and the maps keep their order."""
    import keras

    from cellseg_tf.data.targets import TARGETS
    from cellseg_tf.models import TargetHead

    k = TARGETS[kind]
    inp = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(k, 1)
    logits = conv(inp)
    kernel = np.zeros((1, 1, 3, k), np.float32)
    for c in range(k):
        kernel[0, 0, c, c] = 20.0
    conv.set_weights([kernel, np.full(k, -10.0 + bias, np.float32)])
    return keras.Model(inp, TargetHead(kind)(logits))


def _cell_field(shape=(150, 170), step=19, radius=11):
    """Rows of touching discs laid over the whole image (so many cross tile seams and band borders): truth labels
    and the (H, W, 3) image [foreground, distance, 0] a `_maps_model` turns back into distance maps."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    t = np.zeros(shape, np.int32)
    k = 0
    for cy in range(12, shape[0] - 8, 2 * step - 6):
        for cx in range(12, shape[1] - 8, step):
            k += 1
            t[((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2) & (t == 0)] = k
    from scipy import ndimage

    dist = np.zeros(shape, np.float32)
    for i in range(1, k + 1):
        d = ndimage.distance_transform_edt(t == i)
        dist += (d / d.max()).astype(np.float32)
    return t, np.stack([(t > 0).astype(np.float32), dist, np.zeros(shape, np.float32)], -1)


def test_predictor_maps_across_tiles_and_bands_give_whole_cells(monkeypatch):
    from cellseg_tf.predict import inference
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.options import PredictOptions

    t, image = _cell_field()
    assert label_components(t > 0).max() < t.max() / 3          # touching: components merge most cells
    monkeypatch.setattr(inference, "BAND_BYTES", 1)               # one row of tiles per band
    pred = Predictor([_maps_model()], PredictOptions(batch_size=1, overlap=0.25))
    assert pred.kind == "distance" and pred.out_channels == 2
    lay = pred._layout(*t.shape)
    # cells straddle band borders (a band = one row of tiles here, emitted up to the next tile row's origin) and
    # the seams between tile columns
    rows = [y - lay.top for y in lay.ys[1:] if 0 < y - lay.top < t.shape[0]]
    cols = [x - lay.left for x in lay.xs[1:] if 0 < x - lay.left < t.shape[1]]
    assert len(rows) >= 4 and len(cols) >= 4
    assert len({i for r in rows for i in np.intersect1d(t[r - 1], t[r]) if i}) >= 10
    assert len({i for c in cols for i in np.intersect1d(t[:, c - 1], t[:, c]) if i}) >= 10
    maps = pred.predict_normalized(image)
    assert maps.shape == t.shape + (2,) and maps.dtype == np.float32
    labels = labels_from_maps(maps, pred.kind)
    s = instance_scores(t, labels)
    assert (s.tp, s.fp, s.fn) == (t.max(), 0, 0) and s.mean_matched_iou > 0.95
    assert labels_from_maps(maps[..., :1], "binary").max() < t.max() / 3


def test_ensemble_averages_maps_per_channel_and_rejects_mixed_targets():
    from cellseg_tf.predict.inference import Predictor
    from cellseg_tf.predict.options import PredictOptions

    _, image = _cell_field((64, 64))
    a, b = _maps_model(bias=1.0), _maps_model(bias=-2.0)
    single = [Predictor([m], PredictOptions(tiling="grid")).predict_normalized(image) for m in (a, b)]
    both = Predictor([a, b], PredictOptions(tiling="grid"), weights=[3, 1]).predict_normalized(image)
    np.testing.assert_allclose(both, 0.75 * single[0] + 0.25 * single[1], atol=1e-6)
    hard = Predictor([a, b], PredictOptions(tiling="grid", vote="hard")).predict_normalized(image)
    np.testing.assert_allclose(hard[..., 0], 0.5 * (single[0][..., 0] > 0.5) + 0.5 * (single[1][..., 0] > 0.5))
    np.testing.assert_allclose(hard[..., 1], 0.5 * single[0][..., 1] + 0.5 * single[1][..., 1], atol=1e-6)
    with pytest.raises(ValueError, match=r"same target.*b.keras: binary \(1 channel\(s\)\)"):
        Predictor([a, _maps_model("binary")], names=["a.keras", "b.keras"])


@pytest.mark.parametrize("quantised", [False, True])
def test_batch_instances_from_tuned_params_seams_and_bands(tmp_path, monkeypatch, quantised):
    import yaml

    from cellseg_tf.data.io import read_mask, write_tiff
    from cellseg_tf.predict import batch_predict, inference
    from cellseg_tf.predict.batch_predict import predict_batch
    from cellseg_tf.predict.options import BatchOptions

    t, image = _cell_field()
    write_tiff(tmp_path / "in" / "cells.tif", np.round(image * 1000).astype(np.uint16))
    run = tmp_path / "run"
    run.mkdir()
    _maps_model().save(run / "best.keras")
    monkeypatch.setattr(inference, "BAND_BYTES", 1)
    monkeypatch.setattr(inference, "STREAM_MIN_PX", 0)            # read the TIFF in row windows too
    if quantised:
        monkeypatch.setattr(batch_predict, "MAPS_FLOAT_BYTES", 0)  # maps kept as uint8 until labelling
    opts = BatchOptions(progress=False, instances=True, batch_size=1, norm_low=0, norm_high=100)
    assert predict_batch([str(tmp_path / "in" / "cells.tif")], [str(run / "best.keras")], tmp_path / "out",
                         opts)["done"] == 1
    labels = read_mask(tmp_path / "out" / "cells_instances.tif", instances=True)
    s = instance_scores(t, labels)
    assert (s.tp, s.fp, s.fn) == (t.max(), 0, 0) and s.mean_matched_iou > 0.95
    config = yaml.safe_load((tmp_path / "out" / "predict_config.yaml").read_text())["options"]
    assert config["target_kind"] == "distance" and config["instance_params"]["seed_threshold"] == 0.5

    # RUN/instances.yaml beside the checkpoint is used (no cell is this big) ...
    save_instance_params(run / "instances.yaml", InstanceParams(min_size=10_000), kind="distance")
    opts.overwrite = True
    predict_batch([str(tmp_path / "in" / "cells.tif")], [str(run / "best.keras")], tmp_path / "out", opts)
    assert read_mask(tmp_path / "out" / "cells_instances.tif", instances=True).max() == 0
    # ... and a flag overrides it
    opts.min_size = 16
    predict_batch([str(tmp_path / "in" / "cells.tif")], [str(run / "best.keras")], tmp_path / "out", opts)
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "cells_instances.tif", instances=True), labels)


def test_cli_predict_instances_flags_then_evaluate_and_morphometry(tmp_path, capsys):
    import yaml

    from cellseg_tf.cli import main
    from cellseg_tf.data.io import read_mask, write_png, write_tiff

    t, image = _cell_field((96, 128))
    write_tiff(tmp_path / "in" / "cells.tif", np.round(image * 1000).astype(np.uint16))
    write_png(tmp_path / "masks" / "cells.png", t.astype(np.uint16))
    (tmp_path / "manifest.csv").write_text("image,mask,split\nin/cells.tif,masks/cells.png,test\n")
    _maps_model().save(tmp_path / "model.keras")
    out = tmp_path / "out"
    base = ["predict", "--model", str(tmp_path / "model.keras"), "--input", str(tmp_path / "in"), "--out", str(out),
            "--instances", "--no-progress", "--norm-low", "0", "--norm-high", "100", "--overwrite"]
    assert main(base + ["--seed-threshold", "0.0", "--min-size", "5", "--fg-threshold", "0.4"]) == 0
    params = yaml.safe_load((out / "predict_config.yaml").read_text())["options"]["instance_params"]
    assert (params["seed_threshold"], params["min_size"], params["fg_threshold"]) == (0.0, 5, 0.4)
    assert read_mask(out / "cells_instances.tif", instances=True).max() < t.max()   # one seed per blob: merged
    assert main(base) == 0                                                           # defaults split them
    assert read_mask(out / "cells_instances.tif", instances=True).max() == t.max()
    assert yaml.safe_load((out / "predict_config.yaml").read_text())["options"]["tta"] == "none"  # no run: auto=none
    assert main(base + ["--merge-threshold", "0.0", "--small-fraction", "0.1"]) == 0  # every touching pair joins
    params = yaml.safe_load((out / "predict_config.yaml").read_text())["options"]["instance_params"]
    assert (params["merge_threshold"], params["small_fraction"]) == (0.0, 0.1)
    assert read_mask(out / "cells_instances.tif", instances=True).max() < t.max()
    assert main(base) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--manifest", str(tmp_path / "manifest.csv"),
                 "--out", str(tmp_path / "report.csv"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("instance_f1=1.0000")
    assert main(["morphometry", "--pred", str(out), "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "cells.csv"), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"images=1 cells={t.max()} ")


def _two_peak_cell(size=(48, 80)):
    """One elongated cell whose distance map has two peaks (1.0) and a high saddle (0.6) between them: a second
    seed cuts it in two, but nothing along the cut says "border"."""
    yy, xx = np.mgrid[:size[0], :size[1]]
    fg = (((yy - 24) / 14.0) ** 2 + ((xx - 40) / 34.0) ** 2 < 1).astype(np.float32)
    peaks = np.maximum(np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / 60.0), np.exp(-((yy - 24) ** 2 + (xx - 56) ** 2) / 60.0))
    dist = fg * np.clip(0.6 + 0.4 * peaks, 0, 1) * np.clip(1 - ((yy - 24) / 14.0) ** 2, 0, 1) ** 0.2
    return np.stack([fg, dist.astype(np.float32)], -1)


def test_merge_threshold_joins_a_cell_cut_by_a_second_seed_but_not_touching_cells():
    from cellseg_tf.predict.instances import merge_weak_borders

    cell = _two_peak_cell()
    assert labels_from_maps(cell, "distance", InstanceParams(seed_threshold=0.8, min_size=0)).max() == 2
    assert labels_from_maps(cell, "distance", InstanceParams(seed_threshold=0.8, min_size=0,
                                                             merge_threshold=0.4)).max() == 1
    t, _, contour, distance = _touching_discs()
    for kind, maps in (("contour", contour), ("distance", distance)):   # a real border scores ~0: kept apart
        labels = labels_from_maps(maps, kind, InstanceParams(merge_threshold=0.4))
        assert instance_scores(t, labels).tp == 2, kind
    # transitive: three strips in a row of one uniform core all become one id
    strips = np.repeat(np.repeat(np.arange(1, 4, dtype=np.int32), 5)[None], 4, 0)
    merged = merge_weak_borders(strips, np.ones(strips.shape, np.float32), 0.5)
    assert np.unique(merged).size == 1
    np.testing.assert_array_equal(merge_weak_borders(strips, np.ones(strips.shape, np.float32), 1.0), strips)


def test_small_fraction_fragments_join_their_longest_neighbour_or_go():
    from cellseg_tf.predict.instances import absorb_fragments

    labels = np.zeros((40, 60), np.int32)
    labels[0:20, 0:20] = 1                      # 400 px
    labels[0:20, 24:44] = 2                     # 400 px
    labels[0:3, 20:24] = 3                      # 12-px fragment between them: 3 px border with 1, 3 with 2 ...
    labels[3:8, 20:22] = 3                      # ... + 5 more px along cell 1: joins 1
    labels[30:33, 50:53] = 4                    # 9-px isolated fragment: dropped
    labels[25:40, 0:20] = 5                     # 300 px: not a fragment at fraction 0.3 (median 300)
    out = absorb_fragments(labels, 0.3)
    assert (out[labels == 3] == 1).all() and (out[labels == 4] == 0).all()
    assert (out[labels == 2] == 2).all() and (out[labels == 5] == 5).all()
    np.testing.assert_array_equal(absorb_fragments(labels, 0.0), labels)
    # relative to the image's own cells: the same fragment next to small cells is a cell
    small = np.zeros((20, 40), np.int32)
    small[0:3, 0:4], small[10:13, 10:14], small[0:3, 30:34] = 1, 2, 3
    np.testing.assert_array_equal(absorb_fragments(small, 0.3), small)


def test_new_instance_params_validate_and_round_trip(tmp_path):
    from cellseg_tf.predict.instance_params import save_instance_params

    with pytest.raises(ValueError, match="merge_threshold"):
        InstanceParams(merge_threshold=1.5)
    with pytest.raises(ValueError, match="small_fraction"):
        InstanceParams(small_fraction=-0.1)
    p = InstanceParams(merge_threshold=0.3, small_fraction=0.2)
    assert load_instance_params(save_instance_params(tmp_path / "i.yaml", p)) == p


def test_seed_h_splits_one_core_region_with_two_peaks_by_their_depth(tmp_path):
    """Two peaks over a saddle (0.6) in one core region: a low seed threshold sees one seed, seed_h below the dip
    sees two, seed_h above the lower peak's dip one; contour maps (1 - score) agree; the param round-trips."""
    from scipy import ndimage

    from cellseg_tf.predict.instance_params import save_instance_params
    from cellseg_tf.predict.instances import core_peaks

    cell = _two_peak_cell()
    low = InstanceParams(seed_threshold=0.3, min_size=0)
    assert labels_from_maps(cell, "distance", low).max() == 1
    assert labels_from_maps(cell, "distance", low.replace(seed_h=0.2)).max() == 2
    uneven = cell.copy()                                           # peaks 1.0 and 0.95: the lower one dips ~0.35
    uneven[:, 40:, 1] *= 0.95
    assert labels_from_maps(uneven, "distance", low.replace(seed_h=0.2)).max() == 2
    assert labels_from_maps(uneven, "distance", low.replace(seed_h=0.5)).max() == 1
    contour = np.stack([cell[..., 0], (1.0 - cell[..., 1]) * cell[..., 0]], -1)
    assert labels_from_maps(contour, "contour", InstanceParams(seed_threshold=0.7, min_size=0, seed_h=0.2)).max() == 2
    peaks = core_peaks(cell[..., 1], 0.2)
    assert peaks.dtype == bool and ndimage.label(peaks)[1] == 2
    # precomputed peaks (tuning reuses them) give the same labels as computing them inside
    from cellseg_tf.predict.instances import LABELLERS

    np.testing.assert_array_equal(LABELLERS["distance"](cell, low.replace(seed_h=0.2), peaks),
                                  LABELLERS["distance"](cell, low.replace(seed_h=0.2)))
    with pytest.raises(ValueError, match="seed_h"):
        InstanceParams(seed_h=1.5)
    p = InstanceParams(seed_h=0.05)
    assert load_instance_params(save_instance_params(tmp_path / "i.yaml", p)).seed_h == 0.05
    assert p.replace(seed_h=None).seed_h == 0.05


def test_refinements_give_refine_for_every_pair_in_grid_order():
    """Tuning's shared-merge loop (`refinements`) yields exactly what `refine` gives prediction, pair by pair."""
    import itertools

    from cellseg_tf.predict.instances import (LABELLERS, absorb_fragments, merge_weak_borders, refine,
                                              refinements)

    _, _, _, distance = _touching_discs()
    cell = _two_peak_cell()
    merges, fractions = (0.2, 0.4, 1.0), (0.0, 0.3, 0.6)
    for maps in (distance, cell):
        raw = LABELLERS["distance"](maps, InstanceParams(seed_threshold=0.8))
        got = list(refinements(raw, maps, "distance", merges, fractions))
        assert [(m, f) for m, f, _ in got] == list(itertools.product(merges, fractions))
        for m, f, labels in got:
            want = refine(raw, maps, "distance", InstanceParams(merge_threshold=m, small_fraction=f))
            np.testing.assert_array_equal(labels, want)
            np.testing.assert_array_equal(labels, absorb_fragments(merge_weak_borders(raw, maps[..., 1], m), f))
    assert len({np.unique(labels).size for _, _, labels in got}) > 1   # on the two-peak cell the grid matters
    binary = (distance[..., :1] > 0.5).astype(np.float32)
    raw = LABELLERS["binary"](binary, InstanceParams())
    for m, f, labels in refinements(raw, binary, "binary", merges, fractions):   # no core: merging is a no-op
        np.testing.assert_array_equal(labels, refine(raw, binary, "binary",
                                                     InstanceParams(merge_threshold=m, small_fraction=f)))
