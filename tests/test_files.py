"""common/files: the one atomic writer (temp file beside the target, then rename) and the writers built on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellseg_tf.common.files import atomic_path, write_bytes_atomic, write_text_atomic

PACKAGE = Path(__file__).resolve().parents[1] / "cellseg_tf"


def test_atomic_path_replaces_the_target_on_success(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old\n")
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"      # readers see the old version until the block ends
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_atomic_path_keeps_the_old_file_and_no_temp_on_exception(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old model")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_atomic_path_without_a_previous_file_leaves_nothing_on_exception(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "new" / "summary.json"):
            raise ValueError("invalid")
    assert list((tmp_path / "new").iterdir()) == []


def test_temp_is_hidden_beside_the_target_and_keeps_its_suffix(tmp_path):
    target = tmp_path / "runs" / "best.keras"            # the folder does not exist yet
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.parent.is_dir()
        assert tmp.suffix == ".keras"                     # Keras and matplotlib pick the format by suffix
        assert tmp.name.startswith(".") and tmp != target
        seen = tmp
    assert not seen.exists() and target.is_file()


def test_two_writers_of_one_target_get_different_temps(tmp_path):
    with atomic_path(tmp_path / "a.png") as first, atomic_path(tmp_path / "a.png") as second:
        assert first != second


def test_write_text_atomic_round_trip(tmp_path):
    text = "image,mask\r\nµm²,ünïcode\n"
    path = write_text_atomic(tmp_path / "sub" / "t.csv", text)
    assert path == tmp_path / "sub" / "t.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        assert fh.read() == text                          # UTF-8, newlines exactly as given
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.csv"]


def test_write_bytes_atomic_round_trip(tmp_path):
    data = bytes(range(256))
    assert write_bytes_atomic(tmp_path / "b.bin", data).read_bytes() == data


def test_io_reexports_the_one_writer():
    from cellseg_tf.data import io

    assert io.write_text_atomic is write_text_atomic


def test_package_writers_leave_only_their_target(tmp_path):
    """Config, manifest, PNG and figure writers overwrite in place through the helper: no temp is left behind."""
    from cellseg_tf.common.visualize import plot_histograms
    from cellseg_tf.data.io import read_mask, write_png
    from cellseg_tf.data.manifest import write_manifest
    from cellseg_tf.training.config import TrainConfig

    for epochs in (3, 4):
        TrainConfig(manifest="m.csv", epochs=epochs).save(tmp_path / "config.yaml")
        write_png(tmp_path / "mask.png", np.full((4, 5), 255 if epochs == 4 else 0, np.uint8))
        write_manifest(tmp_path / "manifest.csv", [{"image": str(tmp_path / "mask.png"),
                                                   "mask": str(tmp_path / "mask.png"), "split": "train"}] * epochs)
        plot_histograms({"area": np.arange(10.0)}, tmp_path / "hist.png", title=f"run {epochs}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "hist.png", "manifest.csv", "mask.png"]
    assert TrainConfig.load(tmp_path / "config.yaml").epochs == 4
    assert read_mask(tmp_path / "mask.png").all()
    assert len(pd.read_csv(tmp_path / "manifest.csv")) == 4


def test_os_replace_only_in_the_atomic_writer():
    """One way to write a file atomically: no module but common/files.py renames a temp file by hand."""
    found = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if "os.replace" in p.read_text(encoding="utf-8"))
    assert found == ["common/files.py"], f"hand-written temp+rename outside common/files.py: {found}"


def test_zip_folder_packs_a_folder_atomically_beside_it(tmp_path):
    import zipfile

    from cellseg_tf.common.files import zip_folder

    out = tmp_path / "run"
    (out / "predictions").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    (out / "predictions" / "a.png").write_bytes(b"\x89PNG fake")
    (out / "predictions" / ".a.x1y2.tmp.png").write_bytes(b"half")          # an unfinished atomic write
    archive = zip_folder(out)
    assert archive == tmp_path / "run.zip"
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["predictions/a.png", "summary.json"]
        assert zf.read("predictions/a.png") == b"\x89PNG fake"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.zip"]  # no temp file left behind
    with pytest.raises(ValueError, match="must lie outside"):
        zip_folder(out, out / "inside.zip")
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        zip_folder(tmp_path / "missing")
