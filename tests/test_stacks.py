"""Multi-page stacks -> manifest: in-place `#k` addressing and frame extraction."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellseg_tf.data.io import ImageReadError, open_manifest, read_image, read_mask
from cellseg_tf.data.stacks import find_stacks, stack_manifest


def _stacks(tmp_path, n=3, mask_n=None):
    imgs = np.stack([np.full((16, 20), 1000 * (k + 1), np.uint16) for k in range(n)])
    masks = np.zeros((mask_n or n, 16, 20), np.uint8)
    for k in range(mask_n or n):
        masks[k, 2 + k:8 + k, 3:9] = 255
    tifffile.imwrite(tmp_path / "Stacked_train.tif", imgs, photometric="minisblack")
    tifffile.imwrite(tmp_path / "Stacked_train_Mask.tif", masks, photometric="minisblack")
    return imgs, masks


@pytest.mark.parametrize("extract", [False, True])
def test_stack_manifest_addresses_every_frame(tmp_path, extract):
    imgs, masks = _stacks(tmp_path)
    pairs = find_stacks(tmp_path)
    assert [p[0].endswith("Stacked_train.tif") and p[1].endswith("Stacked_train_Mask.tif") for p in pairs] == [True]
    path = stack_manifest(tmp_path / "out" / "m.csv", pairs, dataset="d",
                          extract_to=(tmp_path / "out") if extract else None)
    samples = open_manifest(path)
    assert len(samples) == 3 and {s.dataset for s in samples} == {"d"}
    for k, s in enumerate(samples):
        assert ("#" in s.image) != extract
        np.testing.assert_array_equal(read_image(s.image)[..., 0], imgs[k])
        np.testing.assert_array_equal(read_mask(s.mask), masks[k] > 0)
    assert len({s.stem for s in samples}) == 3


def test_stack_mismatch_errors(tmp_path):
    _stacks(tmp_path, n=3, mask_n=2)
    with pytest.raises(ImageReadError, match="2 frame.*has 3"):
        stack_manifest(tmp_path / "m.csv", find_stacks(tmp_path))
    (tmp_path / "Stacked_val.tif").write_bytes((tmp_path / "Stacked_train.tif").read_bytes())
    with pytest.raises(ImageReadError, match="Stacked_val.tif: no mask stack"):
        find_stacks(tmp_path)


def test_cli_stacks(tmp_path, capsys):
    from cellseg_tf.cli import main

    _stacks(tmp_path)
    assert main(["stacks", "--folder", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 0
    assert "stacks=1" in capsys.readouterr().out
    assert [s.stem for s in open_manifest(tmp_path / "m.csv")] == ["Stacked_train_f0", "Stacked_train_f1",
                                                                   "Stacked_train_f2"]
    assert main(["stacks", "--folder", str(tmp_path / "none"), "--out", str(tmp_path / "n.csv")]) == 2
