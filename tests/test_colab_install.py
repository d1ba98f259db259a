"""The notebooks' Colab install cell: one cell in every notebook, a plain message without a source, and (slow) the
whole `make colab-check`: the cell run verbatim in a fresh Colab-like virtualenv against the built wheel."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_check", ROOT / "tests" / "colab_check.py")
colab_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_check)


def _run_cell_on_fake_colab(tmp_path, **form) -> subprocess.CompletedProcess:
    script = tmp_path / "cell.py"
    cell = colab_check.install_cell(colab_check.NOTEBOOKS[0])
    script.write_text(colab_check.COLAB_PRELUDE + colab_check.with_form_values(cell, **form))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_every_notebook_has_the_same_install_cell_and_no_made_up_url():
    assert len(colab_check.NOTEBOOKS) >= 2
    cells = {nb.name: colab_check.install_cell(nb) for nb in colab_check.NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"install cells differ: {sorted(cells)}"
    for nb in colab_check.NOTEBOOKS:
        assert "REPO_URL" not in nb.read_text(), f"{nb.name} still has the REPO_URL field"
    cell = next(iter(cells.values()))
    assert 'WHEEL = "/content/drive/' in cell and 'GIT_URL = ""' in cell     # the Drive wheel is the default


@pytest.mark.parametrize("form", [{"WHEEL": "", "GIT_URL": ""}, {"WHEEL": "EMPTY_DIR", "GIT_URL": ""}])
def test_without_a_wheel_or_git_url_the_cell_stops_and_says_what_to_do(tmp_path, form):
    empty = tmp_path / "drive_folder"
    empty.mkdir()
    form = {k: str(empty) if v == "EMPTY_DIR" else v for k, v in form.items()}
    res = _run_cell_on_fake_colab(tmp_path, **form)
    said = res.stdout + res.stderr
    assert res.returncode != 0 and "Nothing to install" in said
    assert "make wheel" in said and "GIT_URL" in said and repr(form["WHEEL"]) in said
    assert "Successfully installed" not in said and "Traceback" not in said   # pip never ran; a message, not a crash


def test_the_readme_shows_the_commands_the_cell_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Installing on Colab"):readme.index("## Layout")]
    cell = colab_check.install_cell(colab_check.NOTEBOOKS[0])
    for needle in ('"-c"', '"--no-deps", "--force-reinstall"', "patchify==0.2.3"):
        assert needle in cell
    assert re.search(r"pip install -c pins\.txt \S+\.whl", section)
    assert "pip install --no-deps --force-reinstall" in section and "patchify==0.2.3" in section
    assert "make wheel" in section and "make colab-check" in section and "GIT_URL" in section


@pytest.mark.slow
def test_make_colab_check_passes_in_a_fresh_colab_like_virtualenv(tmp_path):
    """Minutes: builds the wheel and a Colab-like virtualenv (TensorFlow, numpy 2, ...) from the package index."""
    res = subprocess.run(["make", "colab-check", f"VENV={sys.prefix}", f"COLAB_VENV={tmp_path / 'venv'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "colab-check passed" in res.stdout
    assert "numpy unchanged" in res.stdout and "keras unchanged" in res.stdout
    assert re.search(r"tensorflow(-cpu)? unchanged", res.stdout)
