"""The notebooks run top to bottom (tiny parameters, CPU) and show their curves and overlays."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_quickstart.ipynb"


def _with_parameters(nb, **params):
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=")[0].strip()
        lines.append(f"{name} = {params[name]!r}" if name in params else line)
    cell.source = "\n".join(lines)
    return nb


def test_quickstart_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    out = tmp_path / "qs"
    nb = _with_parameters(nb, OUT_DIR=str(out), EPOCHS=1, PATCH_SIZE=32, N_IMAGES=5, IMAGE_SIZE=64,
                          STEPS_PER_EPOCH=2)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] >= 1 and 0.0 <= summary["dice"] <= 1.0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the curves and at least one overlay are shown inline
    import zipfile

    with zipfile.ZipFile(tmp_path / "qs.zip") as zf:          # ZIP_OUTPUTS (default on): all outputs, one file
        assert {"summary.json", "run/best.keras", "run/curves.png"} <= set(zf.namelist())


def test_your_data_notebook_pairs_folders_trains_a_cv_ensemble_and_segments_new_images(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    import numpy as np

    from cellseg_tf.data.io import write_tiff

    new_images = tmp_path / "new"
    for i in range(2):
        write_tiff(new_images / f"fresh_{i}.tif", (np.random.default_rng(i).random((96, 80)) * 4000).astype(np.uint16))
    write_tiff(new_images / "broken.tif", np.zeros((4, 4), np.uint16))
    (new_images / "broken.tif").write_bytes(b"II*\x00garbage")
    nb = nbformat.read(NOTEBOOK.with_name("01_your_data.ipynb"), as_version=4)
    out = tmp_path / "mine"
    nb = _with_parameters(nb, OUT_DIR=str(out), PREDICT_DIR=str(new_images), FOLDS=2, EPOCHS=1, STEPS_PER_EPOCH=2,
                          PATCH_SIZE=32, MINUTES_PER_MODEL=5.0)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert len((out / "cv" / "models.txt").read_text().split()) == 2          # the 2 fold models form the ensemble
    report = (out / "test_report.csv").read_text().splitlines()
    assert len(report) == 1 + 2 and report[0].startswith("image")              # header + the 2 test images
    assert sorted(p.name for p in (out / "predictions" / "new").glob("*.png")) == ["fresh_0.png", "fresh_1.png"]
    assert "broken.tif" in (out / "predictions" / "new" / "failures.csv").read_text()
    assert len(list((out / "overlays" / "new").glob("*.png"))) == 2
    assert (out / "cells.csv").is_file() and len((out / "cells_per_image.csv").read_text().splitlines()) == 1 + 2
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2 + 2 + 2 + 1  # 2 fold curves, test overlays, new-image overlays, area histogram
    import zipfile

    with zipfile.ZipFile(tmp_path / "mine.zip") as zf:
        assert {"cv/models.txt", "test_report.csv", "cells.csv"} <= set(zf.namelist())


def test_few_shot_notebook_trains_extractors_adapts_and_scores(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    import yaml

    nb = nbformat.read(NOTEBOOK.with_name("02_few_shot.ipynb"), as_version=4)
    out = tmp_path / "fs"
    nb = _with_parameters(nb, OUT_DIR=str(out), SHOTS=2, EPOCHS=1, STEPS_PER_EPOCH=2, PATCH_SIZE=32, N_IMAGES=6,
                          IMAGE_SIZE=96)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    report = yaml.safe_load((out / "adapted_adaptation.yaml").read_text())
    assert report["shots"] == 2 and [e["name"] for e in report["extractors"]] == ["msd", "unet"]
    scores = (out / "test_report.csv").read_text().splitlines()
    assert len(scores) >= 2 and scores[0].startswith("image")                  # header + the scored test images
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2 + 2 + 1  # 2 extractor curves, the support overlays, at least one test overlay
