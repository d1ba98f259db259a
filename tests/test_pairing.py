"""Folder pairing: images ↔ masks by name, seeded splits, the `cellseg-tf manifest` command."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg_tf.cli import main
from cellseg_tf.data.io import open_manifest, write_png
from cellseg_tf.data.manifest import ManifestError
from cellseg_tf.data.pairing import assign_splits, pair_folders


def _touch(path, shape=(8, 8)):
    write_png(path, np.zeros(shape, np.uint8))


def test_pair_folders_by_stem_and_by_suffix_reports_the_unmatched(tmp_path):
    for n in ("c1", "c2", "c3", "lonely"):
        _touch(tmp_path / "images" / f"{n}.png")
    _touch(tmp_path / "masks" / "c1.png")
    _touch(tmp_path / "masks" / "C2_Mask.png")           # suffix and case differ
    _touch(tmp_path / "masks" / "c3_label.png")
    _touch(tmp_path / "masks" / "orphan_mask.png")
    (tmp_path / "masks" / "notes.txt").write_text("not an image")
    pairing = pair_folders(tmp_path / "images", tmp_path / "masks")
    assert [(p[0].split("/")[-1], p[1].split("/")[-1]) for p in pairing.pairs] == [
        ("c1.png", "c1.png"), ("c2.png", "C2_Mask.png"), ("c3.png", "c3_label.png")]
    assert [p.split("/")[-1] for p in pairing.unmatched_images] == ["lonely.png"]
    assert [p.split("/")[-1] for p in pairing.unmatched_masks] == ["orphan_mask.png"]


def test_pair_folders_with_masks_beside_the_images(tmp_path):
    for n in ("a", "b"):
        _touch(tmp_path / f"{n}.tif")
        _touch(tmp_path / f"{n}_mask.png")
    pairing = pair_folders(tmp_path)
    assert [(p[0].split("/")[-1], p[1].split("/")[-1]) for p in pairing.pairs] == [
        ("a.tif", "a_mask.png"), ("b.tif", "b_mask.png")]
    assert pairing.unmatched_images == [] and pairing.unmatched_masks == []


def test_pair_folders_ambiguity_names_the_files(tmp_path):
    _touch(tmp_path / "images" / "a.png")
    _touch(tmp_path / "masks" / "a.png")
    _touch(tmp_path / "masks" / "a_mask.png")
    with pytest.raises(ManifestError, match=r"a\.png: several masks match it \(a\.png, a_mask\.png\)"):
        pair_folders(tmp_path / "images", tmp_path / "masks")
    _touch(tmp_path / "two" / "b.png")
    _touch(tmp_path / "two" / "b.tif")
    _touch(tmp_path / "two_masks" / "b_mask.png")
    with pytest.raises(ManifestError, match="b_mask.png: mask matches two images"):
        pair_folders(tmp_path / "two", tmp_path / "two_masks")
    with pytest.raises(ManifestError, match="nowhere: folder not found"):
        pair_folders(tmp_path / "nowhere")


def test_assign_splits_is_seeded_and_sized():
    labels = assign_splits(10, val_fraction=0.2, test_fraction=0.3, seed=1)
    assert sorted(labels).count("test") == 3 and labels.count("val") == 2 and labels.count("train") == 5
    assert labels == assign_splits(10, 0.2, 0.3, seed=1) and labels != assign_splits(10, 0.2, 0.3, seed=2)
    with pytest.raises(ManifestError, match="no training image"):
        assign_splits(2, val_fraction=0.5, test_fraction=0.5)


def test_cli_manifest_writes_a_loadable_manifest_and_names_bad_pairs(tmp_path, capsys):
    for n in range(5):
        _touch(tmp_path / "images" / f"n{n}.png")
        _touch(tmp_path / "masks" / f"n{n}_mask.png")
    _touch(tmp_path / "images" / "extra.png")
    out = tmp_path / "project" / "manifest.csv"
    assert main(["manifest", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--out", str(out), "--test", "0.4", "--unlabelled-as-test"]) == 0
    captured = capsys.readouterr()
    assert "image without a mask: " in captured.err and "extra.png" in captured.err
    assert captured.out.strip().splitlines()[-1] == f"manifest={out} pairs=5 train=3 val=0 test=3"
    samples = open_manifest(out)
    assert not any(s.image.endswith("extra.png") and s.mask for s in samples)
    assert "../images/n0.png" in out.read_text()                         # relative to the manifest
    before = out.read_text()
    _touch(tmp_path / "masks" / "n0_mask.png", shape=(9, 8))             # a mask of the wrong size is named
    assert main(["manifest", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--out", str(out)]) == 2
    assert "n0_mask.png is 9×8 but image" in capsys.readouterr().err
    assert out.read_text() == before and sorted(p.name for p in out.parent.iterdir()) == ["manifest.csv"]
    assert main(["manifest", "--images", str(tmp_path / "masks"), "--masks", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "m2.csv")]) == 2


def test_progress_bar_follows_verbose(tmp_path, capsys):
    for n in ("a", "b", "c"):
        _touch(tmp_path / "images" / f"{n}.png")
        _touch(tmp_path / "masks" / f"{n}.png")
    assert len(pair_folders(tmp_path / "images", tmp_path / "masks", verbose=0).pairs) == 3
    assert capsys.readouterr().err == ""
    pair_folders(tmp_path / "images", tmp_path / "masks", verbose=1)
    err = capsys.readouterr().err
    assert "pair" in err and "3/3" in err
    assert main(["manifest", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--out", str(tmp_path / "m.csv"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
