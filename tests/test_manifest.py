"""Manifest parsing: frame addressing, validation errors naming row and file, relative-path round trip."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.data.io import open_manifest, write_png
from cellseg_tf.data.manifest import ManifestError, Sample, select, split_frame, write_manifest


def _files(tmp_path, names=("a", "b")):
    for n in names:
        write_png(tmp_path / "img" / f"{n}.png", np.zeros((4, 4), np.uint8))
        write_png(tmp_path / "msk" / f"{n}.png", np.zeros((4, 4), np.uint8))


def test_split_frame():
    assert split_frame("d/stack.tif#3") == ("d/stack.tif", 3)
    assert split_frame("d/a.png") == ("d/a.png", None)
    assert split_frame("d/we#ird.png") == ("d/we#ird.png", None)  # '#' not followed by digits is part of the name
    assert Sample("x/s.tif#2", None, "test", 2).stem == "s_f2"


def test_roundtrip_relative_paths_and_optional_columns(tmp_path):
    _files(tmp_path)
    rows = [{"image": str(tmp_path / "img/a.png"), "mask": str(tmp_path / "msk/a.png"), "split": "train",
             "dataset": "d", "fold": 1},
            {"image": str(tmp_path / "img/b.png"), "mask": "", "split": "test", "dataset": "d", "fold": 2}]
    path = write_manifest(tmp_path / "sub" / "m.csv", rows)
    text = path.read_text()
    assert "../img/a.png" in text and str(tmp_path) not in text  # stored relative to the manifest
    samples = open_manifest(path)
    assert [s.split for s in samples] == ["train", "test"] and samples[1].mask is None
    assert samples[0].image == str(tmp_path / "img/a.png") and samples[0].fold == 1 and samples[0].dataset == "d"
    assert [s.stem for s in select(samples, "train")] == ["a"]
    with pytest.raises(ManifestError, match="unknown split"):
        select(samples, "bogus")


def test_frame_suffix_survives_roundtrip(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "st.tif", np.zeros((3, 4, 4), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "st_Mask.tif", np.zeros((3, 4, 4), np.uint8), photometric="minisblack")
    path = write_manifest(tmp_path / "m.csv", [{"image": f"{tmp_path}/st.tif#2", "mask": f"{tmp_path}/st_Mask.tif#2",
                                                "split": "train"}])
    s = open_manifest(path)[0]
    assert s.image.endswith("st.tif#2") and s.mask.endswith("st_Mask.tif#2") and s.stem == "st_f2"


@pytest.mark.parametrize("body, message", [
    ("image,mask\na.png,a.png\n", "missing column"),
    ("image,mask,split\n", "no rows"),
    ("image,mask,split\nimg/a.png,msk/a.png,training\n", "row 2: unknown split 'training'"),
    ("image,mask,split\nimg/a.png,,train\n", "row 2: img/a.png: a train row needs a mask"),
    ("image,mask,split\nimg/zz.png,msk/a.png,train\n", "row 2: file not found: .*zz.png"),
    ("image,mask,split\nimg/a.png,msk/a.png,train\nimg/a.png,msk/a.png,val\n", "row 3: duplicate of row 2"),
    ("image,mask,split,fold\nimg/a.png,msk/a.png,train,x\n", "fold must be an integer"),
    ("image,mask,split\nimg/a.png,msk/a.png,train\nimg/a.png,msk/b.png,test\n",
     "row 3: img/a.png is also a train image \\(row 2\\).*leaks the test set"),
    # row numbers are lines of the file: comment and blank lines count
    ("# a comment\nimage,mask,split\n\n# another\nimg/a.png,msk/a.png,train\nimg/zz.png,msk/a.png,val\n",
     "row 6: file not found: .*zz.png"),
])
def test_errors_name_row_and_file(tmp_path, body, message):
    _files(tmp_path)
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(ManifestError, match=message):
        open_manifest(tmp_path / "m.csv")


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        open_manifest(tmp_path / "none.csv")

