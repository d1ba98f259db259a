"""Readers and writers: every format, explicit channels, mask modes, outline detection, every bad-input case."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import tifffile

from cellseg_tf.common.files import atomic_path
from cellseg_tf.data.io import (ImageReadError, expand_model_list, image_shape, list_images, open_manifest,
                                outline_rings, page_count, read_image, read_mask, read_raw, resolve_inputs, to_channels,
                                write_png, write_tiff)
from cellseg_tf.data.tiff import TiffRowReader, TiffRowWriter, open_tiff
from cellseg_tf.data.manifest import ManifestError, select, write_manifest
from cellseg_tf.data.preprocessing import percentile_normalize

RNG = np.random.default_rng(0)


def _disk_mask(shape=(48, 48), centres=((12, 12), (30, 34)), r=7):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape, np.uint8)
    for i, (cy, cx) in enumerate(centres, start=1):
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return m


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.float32])
@pytest.mark.parametrize("bands", [1, 3])
def test_tiff_roundtrip_keeps_dtype_and_range(tmp_path, dtype, bands):
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    arr = (RNG.random((20, 24, bands)) * hi).astype(dtype)
    arr[0, 0, 0] = hi  # the full 16-bit range must survive reading
    path = write_tiff(tmp_path / "a.tif", arr)
    out = read_raw(path)
    assert out.dtype == dtype and out.shape == (20, 24, bands)
    np.testing.assert_array_equal(out, arr)
    assert image_shape(path) == (20, 24, bands)
    norm = percentile_normalize(read_image(path, channels=bands))
    assert norm.dtype == np.float32 and norm.min() == 0.0 and norm.max() == 1.0


def test_multipage_tiff_frames(tmp_path):
    stack = np.stack([np.full((10, 12), 100 * k, np.uint16) for k in range(4)])
    path = tmp_path / "Stacked_x.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    assert page_count(path) == 4
    for k in range(4):
        frame = read_image(f"{path}#{k}")
        assert frame.shape == (10, 12, 1) and frame.dtype == np.uint16 and frame.max() == 100 * k
    assert image_shape(f"{path}#2") == (10, 12, 1)
    with pytest.raises(ImageReadError, match=r"4 pages.*#k"):
        read_image(path)  # never silently the first page
    with pytest.raises(ImageReadError, match="frame 7"):
        read_image(f"{path}#7")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_png_jpg_grey_8bit(tmp_path, ext):
    arr = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    path = tmp_path / f"g{ext}"
    cv2.imwrite(str(path), arr)
    out = read_image(path)
    assert out.shape == (16, 32, 1) and out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - arr).max() <= (0 if ext == ".png" else 8)


def test_png_16bit_grey_and_rgb(tmp_path):
    grey = (RNG.random((9, 11)) * 65535).astype(np.uint16)
    write_png(tmp_path / "g16.png", grey)
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 0], grey)
    rgb = (RNG.random((9, 11, 3)) * 65535).astype(np.uint16)
    write_png(tmp_path / "c16.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png", channels=3), rgb)  # RGB order kept


def test_channels_are_explicit(tmp_path):
    rgb = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "rgb.png", rgb)
    assert read_image(tmp_path / "rgb.png", channels=3).shape == (8, 8, 3)
    with pytest.raises(ImageReadError, match="rgb.png.*channels=3"):
        read_image(tmp_path / "rgb.png", channels=1)  # colour asked as grey: error, never silent
    grey_rgba = np.dstack([rgb[..., :1]] * 3 + [np.full((8, 8, 1), 255, np.uint8)])  # DSB style: R=G=B + alpha
    cv2.imwrite(str(tmp_path / "rgba.png"), grey_rgba)
    one = read_image(tmp_path / "rgba.png", channels=1)
    assert one.shape == (8, 8, 1)
    np.testing.assert_array_equal(one[..., 0], rgb[..., 0])
    assert read_image(tmp_path / "rgba.png", channels=3).shape == (8, 8, 3)  # alpha dropped
    g = read_image(tmp_path / "rgb.png", channels=3)[..., :1]
    np.testing.assert_array_equal(to_channels(g, 3), np.repeat(g, 3, -1))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        to_channels(g, 2)


def test_mask_binary_threshold_and_instances(tmp_path):
    labels = _disk_mask().astype(np.uint16)
    write_png(tmp_path / "lab.png", labels)
    binary = read_mask(tmp_path / "lab.png")
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 1}
    np.testing.assert_array_equal(binary, labels > 0)
    inst = read_mask(tmp_path / "lab.png", instances=True)
    assert inst.dtype == np.int32 and set(np.unique(inst)) == {0, 1, 2}  # labels kept for instance metrics
    soft = np.array([[0, 40, 126, 127, 128, 255]], np.uint8)  # anti-aliased 8-bit edge
    write_png(tmp_path / "aa.png", soft)
    np.testing.assert_array_equal(read_mask(tmp_path / "aa.png")[0], [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(read_mask(tmp_path / "aa.png", threshold=127)[0], [0, 0, 0, 0, 1, 1])
    write_tiff(tmp_path / "frac.tif", np.array([[0.0, 1.5]], np.float32))
    with pytest.raises(ImageReadError, match="non-integer"):
        read_mask(tmp_path / "frac.tif", instances=True)


def test_outline_masks_rejected_with_hint(tmp_path):
    filled = _disk_mask((64, 64), ((12, 12), (12, 44), (44, 20), (46, 50)), r=8) > 0
    rings = filled & ~cv2.erode(filled.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    write_png(tmp_path / "outline.png", rings.astype(np.uint8) * 255)
    write_png(tmp_path / "filled.png", filled.astype(np.uint8) * 255)
    assert outline_rings(rings)[0] == 4 and outline_rings(filled)[0] == 0
    with pytest.raises(ImageReadError, match="outline.png.*OUTLINES.*fill"):
        read_mask(tmp_path / "outline.png", check_outlines=True)
    assert read_mask(tmp_path / "outline.png").sum() == rings.sum()  # off by default (predictions)
    assert read_mask(tmp_path / "filled.png", check_outlines=True).sum() == filled.sum()


def test_membrane_network_is_not_an_outline():
    """A thin closed network (EM membranes: one component, many holes) is a legitimate foreground."""
    net = np.zeros((64, 64), bool)
    net[::12, :] = True
    net[:, ::12] = True
    n_rings, n, share = outline_rings(net)
    assert n == 1 and n_rings == 0 and share == 0.0


def test_isbi_membranes_accepted(shared_data):
    paths = sorted((shared_data / "isbi2012_em" / "masks").glob("*.png"))
    assert paths
    for p in paths:
        m = read_mask(p, check_outlines=True)  # must not raise
        assert 0.05 < m.mean() < 0.5


def test_one_pair_from_each_shared_dataset(shared_data):
    expect = {"dsb2018_fluo": (256, 256), "isbi2012_em": (512, 512), "stardist_dsb_sample": (512, 512),
              "usiigaci_phase": (1022, 1024)}
    for name, hw in expect.items():
        samples = open_manifest(shared_data / name / "manifest.csv")
        s = select(samples, "train")[0]
        img = read_image(s.image, channels=1)
        assert img.shape == hw + (1,), name
        m = read_mask(s.mask, check_outlines=True)
        assert m.shape == hw and m.dtype == np.uint8 and 0 < m.mean() < 0.9, name
        if name != "isbi2012_em":
            inst = read_mask(s.mask, instances=True)
            assert inst.max() > 1, name  # instance ids kept
        if name in ("usiigaci_phase", "stardist_dsb_sample"):
            assert img.dtype == np.uint16, name  # 16-bit range kept until normalisation
        assert read_image(s.image, channels=3).shape == hw + (3,)


@pytest.mark.parametrize("name, content, problem", [
    ("nope.png", None, "nope.png: file not found"),
    ("empty.png", b"", "empty.png: file is empty"),
    ("bad.png", b"\x89PNG not really", "bad.png: cannot decode"),
    ("bad.tif", b"II*\x00garbage", "bad.tif"),
    ("a.gif", b"GIF89a", "a.gif.*unsupported extension"),
])
def test_unreadable_files_name_file_and_problem(tmp_path, name, content, problem):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=problem):
        read_image(tmp_path / name)


def test_bad_inputs_name_file_and_problem(tmp_path):
    nan = np.ones((4, 4), np.float32)
    nan[1, 1] = np.nan
    write_tiff(tmp_path / "nan.tif", nan)
    with pytest.raises(ImageReadError, match="nan.tif.*NaN"):
        read_image(tmp_path / "nan.tif")
    inf = np.ones((4, 4), np.float32)
    inf[0, 0] = np.inf
    write_tiff(tmp_path / "inf.tif", inf)
    with pytest.raises(ImageReadError, match="inf.tif.*Inf"):
        read_mask(tmp_path / "inf.tif")
    write_png(tmp_path / "p.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="#k"):
        read_image(f"{tmp_path / 'p.png'}#1")
    colour = RNG.integers(0, 9, (5, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "colourmask.png", colour)
    with pytest.raises(ImageReadError, match="colourmask.png.*colour bands"):
        read_mask(tmp_path / "colourmask.png")


def test_open_manifest_reports_size_mismatch(tmp_path):
    write_png(tmp_path / "i.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "m.png", np.zeros((8, 9), np.uint8))
    m = write_manifest(tmp_path / "m.csv", [{"image": str(tmp_path / "i.png"), "mask": str(tmp_path / "m.png"),
                                             "split": "train"}])
    with pytest.raises(ManifestError, match=r"row 2: mask .*m.png is 8×9 but image .*i.png is 8×8"):
        open_manifest(m)  # the structure is fine, but sizes are checked too


def test_writers_are_atomic_and_inputs_untouched(tmp_path):
    arr = RNG.integers(0, 255, (6, 7), dtype=np.uint8)
    before = arr.copy()
    write_png(tmp_path / "o" / "x.png", arr)
    write_tiff(tmp_path / "o" / "x.tif", arr)
    np.testing.assert_array_equal(arr, before)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.png", "x.tif"]  # no temp files left
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "x.tif")[..., 0], arr)
    assert list_images(tmp_path) == [str(tmp_path / "o" / "x.png"), str(tmp_path / "o" / "x.tif")]


def test_tiff_pages_are_pages_not_bands_or_overviews(tmp_path):
    """Page counting (GDAL sub-datasets) sees the pages of a stack, not the bands of one page or its overviews;
    no NotGeoreferencedWarning reaches the caller of any TIFF reader or writer."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = write_tiff(tmp_path / "rgb.tif", RNG.integers(0, 255, (64, 48, 3), dtype=np.uint8))
        assert page_count(rgb) == 1 and image_shape(rgb) == (64, 48, 3)
        with open_tiff(rgb, "r+") as ds:
            ds.build_overviews([2, 4])
        with open_tiff(rgb) as ds:
            assert ds.overviews(1) == [2, 4]
        assert page_count(rgb) == 1 and read_raw(rgb).shape == (64, 48, 3)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, RNG.integers(0, 9, (3, 8, 6), dtype=np.uint16), photometric="minisblack")
    assert page_count(stack) == 3 and page_count(f"{stack}#1") == 3
    assert page_count(write_png(tmp_path / "p.png", np.zeros((4, 4), np.uint8))) == 1


def test_tiff_rows_stream_in_and_out(tmp_path):
    """TiffRowWriter (into an atomic temp file) + TiffRowReader windows round-trip a 2-band image and a stack page."""
    image = RNG.integers(0, 60000, (37, 23, 2), dtype=np.uint16)
    path = tmp_path / "rows.tif"
    with atomic_path(path) as tmp:
        with TiffRowWriter(tmp, 37, 23, np.uint16, bands=2) as writer:
            for r0 in range(0, 37, 10):
                writer.write(r0, image[r0:r0 + 10])
        assert not path.exists()  # nothing visible until the rename
    np.testing.assert_array_equal(read_raw(path), image)
    with TiffRowReader(path) as reader:
        assert (reader.height, reader.width, reader.bands, reader.dtype) == (37, 23, 2, np.uint16)
        np.testing.assert_array_equal(np.concatenate([reader.read(r, min(37, r + 8)) for r in range(0, 37, 8)]),
                                      image)
    stack = np.stack([np.full((5, 4), 10 * k, np.uint16) for k in range(3)])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    with TiffRowReader(f"{tmp_path / 's.tif'}#2") as reader:
        np.testing.assert_array_equal(reader.read(1, 3)[..., 0], stack[2, 1:3])
    with pytest.raises(ImageReadError, match="3 pages"):
        TiffRowReader(tmp_path / "s.tif").__enter__()


def test_resolve_inputs_and_model_lists(tmp_path):
    for name in ("a.png", "sub/b.tif", "sub/deep/c.jpg", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p[len(str(tmp_path)) + 1:] for p in resolve_inputs(tmp_path)] == ["a.png", "sub/b.tif", "sub/deep/c.jpg"]
    assert len(resolve_inputs(str(tmp_path / "**" / "*.tif"))) == 1
    (tmp_path / "list.txt").write_text("# comment\na.png\n\nsub/b.tif\n")
    assert resolve_inputs(tmp_path / "list.txt") == [str(tmp_path / "a.png"), str(tmp_path / "sub/b.tif")]
    assert expand_model_list([tmp_path / "list.txt", "m.keras"]) == resolve_inputs(tmp_path / "list.txt") + ["m.keras"]
    with pytest.raises(FileNotFoundError):
        resolve_inputs(tmp_path / "missing")
