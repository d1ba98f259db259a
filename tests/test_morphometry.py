"""Per-cell morphometry: values against hand-computed shapes, units, intensities, the folder job and the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellseg_tf.cli import main
from cellseg_tf.data.io import write_png, write_tiff
from cellseg_tf.analysis.morphometry import cell_table, measure_folder


def _scene():
    yy, xx = np.mgrid[:64, :80]
    labels = np.zeros((64, 80), np.uint16)
    disc = (yy - 30) ** 2 + (xx - 40) ** 2 <= 10 ** 2
    labels[disc] = 1
    labels[0:6, 50:70] = 2                                    # a 6×20 bar on the top edge
    image = np.where(disc, 7.0, 1.0)
    return labels, image, disc


def test_shapes_units_and_intensities_match_hand_computed_values():
    labels, image, disc = _scene()
    t = cell_table(labels, image).set_index("label")
    assert t.loc[1, "area"] == disc.sum() and t.loc[2, "area"] == 120
    assert t.loc[1, "centroid_y"] == pytest.approx(30) and t.loc[1, "centroid_x"] == pytest.approx(40)
    assert 0.9 < t.loc[1, "circularity"] <= 1.1 and t.loc[2, "circularity"] < 0.7
    assert t.loc[1, "eccentricity"] < 0.1 and t.loc[2, "major_axis"] > 3 * t.loc[2, "minor_axis"]
    assert abs(t.loc[2, "orientation_deg"]) == pytest.approx(90)  # the bar's long axis runs along the columns
    assert not t.loc[1, "touches_border"] and t.loc[2, "touches_border"]
    assert t.loc[1, "mean_intensity"] == 7 and t.loc[1, "integrated_intensity"] == 7 * disc.sum()
    assert t.loc[2, "min_intensity"] == t.loc[2, "max_intensity"] == 1
    half = cell_table(labels, pixel_size=0.5).set_index("label")
    assert half.loc[2, "area"] == pytest.approx(120 * 0.25) and half.loc[1, "perimeter"] == pytest.approx(
        t.loc[1, "perimeter"] * 0.5)
    assert half.loc[1, "circularity"] == pytest.approx(t.loc[1, "circularity"])
    assert "mean_intensity" not in half.columns
    assert len(cell_table(np.zeros((8, 8), np.uint8))) == 0
    with pytest.raises(ValueError, match="image is 8×8 but labels are 64×80"):
        cell_table(labels, np.zeros((8, 8)))


def test_measure_folder_uses_saved_instances_reports_failures_and_goes_on(tmp_path):
    labels, image, _ = _scene()
    for stem in ("a", "b", "c"):
        write_tiff(tmp_path / "images" / f"{stem}.tif", (image * 100).astype(np.uint16))
    pred = tmp_path / "pred"
    write_png(pred / "a.png", ((labels > 0) * 255).astype(np.uint8))
    touching = np.zeros((64, 80), np.uint16)
    touching[10:20, 10:20], touching[10:20, 20:30] = 1, 2           # two touching squares: one blob in the PNG
    write_png(pred / "b.png", ((touching > 0) * 255).astype(np.uint8))
    write_tiff(pred / "b_instances.tif", touching)
    images = [str(tmp_path / "images" / f"{s}.tif") for s in ("a", "b", "c")]
    cells, per_image, failures = measure_folder(pred, images, tmp_path / "out" / "cells.csv")
    assert [f.split(": ")[0] for f in failures] == [images[2]] and "c.png: no prediction" in failures[0]
    assert per_image.set_index("image").loc[images[1], "cells"] == 2   # the saved instances, not the merged blob
    assert per_image.set_index("image").loc[images[0], "cells_not_touching_border"] == 1
    written = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert list(written.columns[:2]) == ["image", "label"] and len(written) == len(cells) == 4
    assert written[written.image == images[0]]["mean_intensity"].max() == 700
    assert len(pd.read_csv(tmp_path / "out" / "cells_per_image.csv")) == 2
    assert (tmp_path / "out" / "cells_histograms.png").stat().st_size > 1000


def test_cli_morphometry(tmp_path, capsys):
    labels, image, _ = _scene()
    write_tiff(tmp_path / "images" / "a.tif", image.astype(np.float32))
    write_png(tmp_path / "pred" / "a.png", ((labels > 0) * 255).astype(np.uint8))
    assert main(["morphometry", "--pred", str(tmp_path / "pred"), "--input", str(tmp_path / "images"),
                 "--out", str(tmp_path / "cells.csv"), "--pixel-size", "0.65"]) == 0
    assert capsys.readouterr().out.startswith("images=1 cells=2 failed=0")
    assert pd.read_csv(tmp_path / "cells.csv")["area"].max() == pytest.approx(
        (np.asarray(labels) == 1).sum() * 0.65 ** 2)
    assert main(["morphometry", "--pred", str(tmp_path / "nothing"), "--input", str(tmp_path / "images"),
                 "--out", str(tmp_path / "c2.csv")]) == 2
    assert "no predictions could be measured" in capsys.readouterr().err


def test_measure_folder_progress_bar_follows_verbose(tmp_path, capsys):
    labels, image, _ = _scene()
    write_tiff(tmp_path / "images" / "a.tif", image.astype(np.float32))
    write_png(tmp_path / "pred" / "a.png", ((labels > 0) * 255).astype(np.uint8))
    images = [str(tmp_path / "images" / "a.tif")]
    measure_folder(tmp_path / "pred", images, tmp_path / "q" / "cells.csv", verbose=0)
    assert capsys.readouterr().err == ""
    measure_folder(tmp_path / "pred", images, tmp_path / "l" / "cells.csv", verbose=1)
    err = capsys.readouterr().err
    assert "measure" in err and "1/1" in err
    assert main(["morphometry", "--pred", str(tmp_path / "pred"), "--input", str(tmp_path / "images"),
                 "--out", str(tmp_path / "c" / "cells.csv"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
