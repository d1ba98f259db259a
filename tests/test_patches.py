"""Offline patch export: tiles reassemble to the reflect-padded image, manifest rows, ids kept, bad files skipped."""
from __future__ import annotations

import numpy as np
import pytest
from patchify import unpatchify

from cellseg_tf.cli import main
from cellseg_tf.data.io import open_manifest, read_mask, read_raw, write_png
from cellseg_tf.data.manifest import write_manifest
from cellseg_tf.data.patches import cut_patches, export_patches, grid_length, pad_to_grid
from cellseg_tf.data.tiff import write_tiff


def _pair(folder, name, shape, ids=3, dtype=np.uint16, seed=0):
    """A random `dtype` image and an instance mask with `ids` square objects (largest id = ids) as PNGs."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    mask = np.zeros(shape[:2], np.int32)
    for k in range(ids):
        y, x = (7 * k) % (shape[0] - 4), (11 * k) % (shape[1] - 4)
        mask[y:y + 4, x:x + 4] = k + 1
    write_png(folder / f"{name}.png", image)
    write_png(folder / f"{name}_mask.png", mask.astype(np.uint16 if mask.max() > 255 else np.uint8))
    return folder / f"{name}.png", folder / f"{name}_mask.png", image, mask


def _manifest(tmp_path, rows):
    return write_manifest(tmp_path / "src" / "m.csv", rows)


@pytest.mark.parametrize("length,size,step,expected", [(64, 32, 32, 64), (70, 32, 32, 96), (20, 32, 32, 32),
                                                       (70, 32, 16, 80), (32, 32, 8, 32), (33, 32, 8, 40)])
def test_grid_length(length, size, step, expected):
    assert grid_length(length, size, step) == expected
    assert (grid_length(length, size, step) - size) % step == 0


def test_grid_length_rejects_bad_steps():
    with pytest.raises(ValueError, match="step"):
        grid_length(64, 32, 40)
    with pytest.raises(ValueError, match="step"):
        grid_length(64, 32, 0)


@pytest.mark.parametrize("shape", [(50, 70), (50, 70, 3), (32, 64)])
@pytest.mark.parametrize("step", [16, 32])
def test_tiles_reassemble_to_the_reflect_padded_image(shape, step):
    image = np.random.default_rng(1).integers(0, 65535, size=shape, dtype=np.uint16)
    tiles = cut_patches(image, 32, step)
    padded = pad_to_grid(image, 32, step)
    h, w = grid_length(shape[0], 32, step), grid_length(shape[1], 32, step)
    assert padded.shape[:2] == (h, w) and padded.dtype == np.uint16
    assert tiles.shape[:4] == ((h - 32) // step + 1, (w - 32) // step + 1, 32, 32)
    np.testing.assert_array_equal(padded[:shape[0], :shape[1]], image)        # the original is the top-left corner
    if h > shape[0]:  # reflection: the first padded row repeats the last image row, the next one the row before
        np.testing.assert_array_equal(padded[shape[0], :shape[1]], image[-1])
        np.testing.assert_array_equal(padded[shape[0] + 1, :shape[1]], image[-2])
    if image.ndim == 2:
        np.testing.assert_array_equal(unpatchify(tiles, padded.shape), padded)
    else:
        for ch in range(3):
            np.testing.assert_array_equal(unpatchify(np.ascontiguousarray(tiles[..., ch]), padded.shape[:2]),
                                          padded[..., ch])
    np.testing.assert_array_equal(tiles[-1, -1], padded[-32:, -32:])             # the last tile ends at the edge


def test_export_writes_tiles_and_a_manifest_with_the_same_splits(tmp_path):
    src = tmp_path / "src"
    a_img, a_mask, a, a_labels = _pair(src, "a", (40, 64), seed=1)
    b_img, b_mask, b, _ = _pair(src, "b", (32, 32), dtype=np.uint8, seed=2)
    c_img, _, _, _ = _pair(src, "c", (32, 32), seed=3)
    manifest = _manifest(tmp_path, [
        {"image": str(a_img), "mask": str(a_mask), "split": "train", "dataset": "toy", "fold": 1},
        {"image": str(b_img), "mask": str(b_mask), "split": "val", "dataset": "toy", "fold": 0},
        {"image": str(c_img), "mask": "", "split": "test", "dataset": "toy", "fold": 0}])
    before = read_raw(a_img).copy()
    result = export_patches(manifest, tmp_path / "tiles", size=32, split=None, verbose=0)
    assert result.failures == [] and result.images == 3
    samples = open_manifest(result.manifest)     # loads, files exist, image/mask sizes agree
    assert result.tiles == len(samples) == 2 * 2 + 1 + 1   # a: 40×64 padded to 64×64 -> 2×2 tiles
    by_split = {sp: sorted(s.image.rsplit("/", 1)[-1] for s in samples if s.split == sp) for sp in ("train", "val",
                                                                                                  "test")}
    assert by_split == {"train": [f"a_r{r:03d}_c{c:03d}.png" for r in range(2) for c in range(2)],
                        "val": ["b_r000_c000.png"], "test": ["c_r000_c000.png"]}
    assert {s.dataset for s in samples} == {"toy"}
    assert {s.fold for s in samples if s.image.endswith(("a_r000_c000.png", "a_r001_c001.png"))} == {1}
    assert [s.mask for s in samples if s.split == "test"] == [None]
    tiles = open_manifest(result.manifest)
    a_tiles = {s.image.rsplit("/", 1)[-1]: s for s in tiles if "/a_r" in s.image}
    top_left = read_raw(a_tiles["a_r000_c000.png"].image)
    assert top_left.dtype == np.uint16 and top_left.shape == (32, 32, 1)        # bit depth kept
    np.testing.assert_array_equal(top_left[..., 0], a[:32, :32])
    padded = pad_to_grid(a, 32, 32)
    np.testing.assert_array_equal(read_raw(a_tiles["a_r001_c001.png"].image)[..., 0], padded[32:, 32:])
    assert read_raw([s for s in tiles if "/b_r" in s.image][0].image).dtype == np.uint8
    np.testing.assert_array_equal(read_mask(a_tiles["a_r000_c001.png"].mask, instances=True), a_labels[:32, 32:])
    np.testing.assert_array_equal(read_raw(a_img), before)                      # inputs untouched


def test_export_keeps_instance_ids_above_255_and_rgb(tmp_path):
    src = tmp_path / "src"
    img, _, image, _ = _pair(src, "rgb", (48, 48, 3), dtype=np.uint8)
    labels = np.zeros((48, 48), np.uint16)
    labels[2:10, 2:10], labels[20:30, 5:15], labels[30:40, 30:45] = 300, 7, 65000
    write_png(src / "rgb_mask.png", labels)
    write_tiff(src / "f.tif", np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48))
    big = np.zeros((48, 48), np.int32)
    big[5:20, 5:20] = 70000
    write_tiff(src / "f_mask.tif", big)
    manifest = _manifest(tmp_path, [{"image": str(img), "mask": str(src / "rgb_mask.png"), "split": "train"},
                                    {"image": str(src / "f.tif"), "mask": str(src / "f_mask.tif"), "split": "train"}])
    result = export_patches(manifest, tmp_path / "tiles", size=32, step=16, verbose=0)
    assert result.failures == [] and result.tiles == 2 * 2 * 2     # 48 px, tile 32, step 16: origins 0 and 16
    samples = open_manifest(result.manifest)
    rgb = [s for s in samples if "/rgb_" in s.image]
    stored = read_raw(rgb[0].mask)
    assert stored.dtype == np.uint16 and rgb[0].mask.endswith(".png")
    joined = np.zeros((48, 48), np.int64)
    for s in rgb:
        r, c = (int(part[1:]) for part in s.image.rsplit("/", 1)[-1][:-4].split("_")[-2:])
        joined[16 * r:16 * r + 32, 16 * c:16 * c + 32] = read_mask(s.mask, instances=True)
        np.testing.assert_array_equal(read_raw(s.image), image[16 * r:16 * r + 32, 16 * c:16 * c + 32])
    np.testing.assert_array_equal(joined, labels)                      # every id, 300 and 65000 included
    f = [s for s in samples if "/f_" in s.image]
    assert all(s.image.endswith(".tif") and s.mask.endswith(".tif") for s in f)  # float image, ids > 65535: TIFF
    assert read_raw(f[0].image).dtype == np.float32
    assert read_mask(f[0].mask, instances=True).max() == 70000


def test_corrupt_and_mismatched_files_are_reported_and_skipped(tmp_path):
    src = tmp_path / "src"
    good_img, good_mask, _, _ = _pair(src, "good", (32, 32))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _, small_mask, _, _ = _pair(src, "small", (16, 16))
    other, _, _, _ = _pair(src, "other", (32, 32))
    manifest = _manifest(tmp_path, [{"image": str(src / "broken.png"), "mask": str(good_mask), "split": "train"},
                                    {"image": str(other), "mask": str(small_mask), "split": "train"},
                                    {"image": str(good_img), "mask": str(good_mask), "split": "train"}])
    result = export_patches(manifest, tmp_path / "tiles", size=16, verbose=0)
    assert [f for f, _ in result.failures] == [str(src / "broken.png"), str(other)]
    assert "cannot decode" in result.failures[0][1] and "broken.png" in result.failures[0][1]
    assert "16×16" in result.failures[1][1] and "32×32" in result.failures[1][1]
    assert result.images == 1 and result.tiles == 4
    assert all("/good_" in s.image for s in open_manifest(result.manifest))
    bad_only = _manifest(tmp_path, [{"image": str(src / "broken.png"), "mask": str(good_mask), "split": "train"}])
    with pytest.raises(ValueError, match="every row failed.*broken.png"):
        export_patches(bad_only, tmp_path / "none", size=16, verbose=0)


def test_progress_bar_follows_verbose(tmp_path, capsys):
    img, mask, _, _ = _pair(tmp_path / "src", "a", (32, 32))
    manifest = _manifest(tmp_path, [{"image": str(img), "mask": str(mask), "split": "train"}])
    export_patches(manifest, tmp_path / "quiet", size=16, verbose=0)
    assert capsys.readouterr().err == ""
    export_patches(manifest, tmp_path / "loud", size=16, verbose=1)
    err = capsys.readouterr().err
    assert "patches" in err and "1/1" in err


def test_cli_patches(tmp_path, capsys):
    src = tmp_path / "src"
    img, mask, _, _ = _pair(src, "a", (40, 40))
    (src / "bad.png").write_bytes(b"")
    _, bad_mask, _, _ = _pair(src, "b", (40, 40))
    manifest = _manifest(tmp_path, [{"image": str(img), "mask": str(mask), "split": "train"},
                                    {"image": str(src / "bad.png"), "mask": str(bad_mask), "split": "train"}])
    assert main(["patches", "--manifest", str(manifest), "--out", str(tmp_path / "t"), "--size", "32",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("tiles=4 images=1 failed=1")
    assert captured.err.strip() == f"cellseg-tf patches: skipped {src / 'bad.png'}: {src / 'bad.png'}: file is empty"
    assert len(open_manifest(tmp_path / "t" / "manifest.csv")) == 4
    assert main(["patches", "--manifest", str(manifest), "--out", str(tmp_path / "t2"), "--size", "32",
                 "--step", "48"]) == 2
    assert "step" in capsys.readouterr().err


def test_two_sources_with_one_name_do_not_overwrite_each_other(tmp_path):
    first, first_mask, first_image, _ = _pair(tmp_path / "src" / "one", "a", (16, 16), seed=1)
    second, second_mask, _, _ = _pair(tmp_path / "src" / "two", "a", (16, 16), seed=2)
    manifest = _manifest(tmp_path, [{"image": str(first), "mask": str(first_mask), "split": "train"},
                                    {"image": str(second), "mask": str(second_mask), "split": "train"}])
    result = export_patches(manifest, tmp_path / "tiles", size=16, verbose=0)
    assert result.tiles == 1 and [f for f, _ in result.failures] == [str(second)]
    assert "already used by" in result.failures[0][1] and str(first) in result.failures[0][1]
    np.testing.assert_array_equal(read_raw(open_manifest(result.manifest)[0].image)[..., 0], first_image)
