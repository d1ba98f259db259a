"""Offline expansion: K variants per pair on disk, a loadable manifest, reproducible, bad pairs reported."""
from __future__ import annotations

import numpy as np

from cellseg_tf.data.dataset import load_pairs
from cellseg_tf.data.expand import expand_dataset
from cellseg_tf.data.io import open_manifest, read_image, read_mask, write_png
from cellseg_tf.data.manifest import write_manifest


def _manifest(tmp_path, n=2, broken=False):
    rows = []
    for i in range(n):
        m = np.zeros((24, 32), np.uint8)
        m[4 + i:14 + i, 6:20] = 255
        img = (m // 2 + 20).astype(np.uint8)
        write_png(tmp_path / "src" / f"i{i}.png", img)
        write_png(tmp_path / "src" / f"m{i}.png", m)
        rows.append({"image": str(tmp_path / "src" / f"i{i}.png"), "mask": str(tmp_path / "src" / f"m{i}.png"),
                     "split": "train", "dataset": "toy"})
    if broken:
        write_png(tmp_path / "src" / "mbad.png", np.zeros((5, 5), np.uint8))
        rows.append({"image": rows[0]["image"], "mask": str(tmp_path / "src" / "mbad.png"), "split": "train"})
    return write_manifest(tmp_path / "src" / "m.csv", rows)


def test_expand_writes_k_variants_and_manifest(tmp_path):
    src = _manifest(tmp_path)
    before = read_image(tmp_path / "src" / "i0.png").copy()
    path, failures = expand_dataset(src, tmp_path / "exp", variants=3, seed=1)
    assert failures == []
    samples = open_manifest(path)
    assert len(samples) == 2 * (3 + 1) and {s.split for s in samples} == {"train"}
    aug = [s for s in samples if "_aug" in s.image]
    assert len(aug) == 6 and {s.dataset for s in samples} == {"toy"}
    for s in aug:
        img, m = read_image(s.image), read_mask(s.mask)
        assert img.dtype == np.uint16 and set(np.unique(m)) <= {0, 1}
        assert img.shape in ((24, 32, 1), (32, 24, 1)) and m.shape == img.shape[:2]  # rot90/transpose swap H, W
    assert len(load_pairs(samples)) == 8
    np.testing.assert_array_equal(read_image(tmp_path / "src" / "i0.png"), before)  # inputs untouched
    first = [read_image(s.image) for s in aug]
    expand_dataset(src, tmp_path / "exp2", variants=3, seed=1)
    second = [read_image(str(s.image).replace("/exp/", "/exp2/")) for s in aug]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # reproducible
    assert any(not np.array_equal(a, first[0]) for a in first[1:3])


def test_expand_reports_bad_pair_and_goes_on(tmp_path):
    src = _manifest(tmp_path, n=1, broken=True)
    path, failures = expand_dataset(src, tmp_path / "exp", variants=2, include_original=False)
    assert len(failures) == 1 and "mbad.png" in failures[0][1]
    assert len(open_manifest(path)) == 2


def test_cli_expand(tmp_path, capsys):
    from cellseg_tf.cli import main

    src = _manifest(tmp_path, n=1)
    assert main(["expand", "--manifest", str(src), "--out", str(tmp_path / "e"), "--variants", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("manifest=")
    assert len(open_manifest(tmp_path / "e" / "manifest.csv")) == 3


def test_progress_bar_follows_verbose(tmp_path, capsys):
    src = _manifest(tmp_path, n=2)
    expand_dataset(src, tmp_path / "quiet", variants=1, verbose=0)
    assert capsys.readouterr().err == ""
    expand_dataset(src, tmp_path / "loud", variants=1, verbose=1)
    err = capsys.readouterr().err
    assert "expand" in err and "2/2" in err
    from cellseg_tf.cli import main

    assert main(["expand", "--manifest", str(src), "--out", str(tmp_path / "cli"), "--variants", "1", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
