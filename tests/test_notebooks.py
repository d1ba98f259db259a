"""The quickstart notebook runs top to bottom (tiny parameters, CPU) and shows its curves and overlays."""
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
