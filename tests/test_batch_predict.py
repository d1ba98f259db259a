"""The batch job: outputs, resume, atomic writes after injected failures, failures.csv, shards, instances, CLI."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import yaml

import cellseg_tf

from cellseg_tf.cli import main
from cellseg_tf.data.io import read_image, read_raw, resolve_inputs, write_png, write_tiff
from cellseg_tf.data.preprocessing import NORM_LOW
from cellseg_tf.predict.batch_predict import parse_shard, predict_batch, shard_inputs
from cellseg_tf.predict.options import BatchOptions, output_paths


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from cellseg_tf.models import build_model

    root = tmp_path_factory.mktemp("models")
    paths = []
    for i, name in enumerate(("z_a.keras", "b.keras")):
        import keras

        keras.utils.set_random_seed(i)
        build_model("unet", (32, 32, 1), base_filters=4, depth=2).save(root / name)
        paths.append(str(root / name))
    return paths


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    write_png(folder / "a.png", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    write_png(folder / "sub" / "b.png", rng.integers(0, 255, (33, 70), dtype=np.uint8))
    write_tiff(folder / "c.tif", rng.integers(0, 60000, (64, 48), dtype=np.uint16))
    return folder, [str(folder / "a.png"), str(folder / "sub" / "b.png"), str(folder / "c.tif")]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_outputs_resume_and_overwrite(model_files, images, tmp_path):
    folder, inputs = images
    before = {p: os.path.getmtime(p) for p in inputs}
    out = tmp_path / "out"
    options = BatchOptions(progress=False, save_prob="npy", instances=True, threshold=0.4)
    res = predict_batch(inputs, model_files, out, options)
    assert res == {"done": 3, "failed": 0, "skipped": 0, "total": 3}
    for p, stem in zip(inputs, ("a", "b", "c")):
        mask = read_raw(out / f"{stem}.png")[..., 0]
        assert mask.shape == read_image(p).shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        prob = np.load(out / f"{stem}_prob.npy")
        assert prob.shape == mask.shape and prob.dtype == np.float32
        np.testing.assert_array_equal(prob > 0.4, mask == 255)
        assert set(output_paths(out, p, "npy", True).values()) == \
            {out / f"{stem}.png", out / f"{stem}_prob.npy", out / f"{stem}_instances.tif"}
        labels = read_raw(out / f"{stem}_instances.tif")[..., 0]
        assert labels.dtype == np.uint16 and labels.shape == mask.shape
    t = rows(out / "timings.csv")
    assert [r["image"] for r in t] == inputs and all(int(r["models"]) == 2 and int(r["tiles"]) > 0 for r in t)
    assert rows(out / "failures.csv") == []
    assert {p: os.path.getmtime(p) for p in inputs} == before  # inputs untouched
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temp files left
    config = yaml.safe_load((out / "predict_config.yaml").read_text())  # the folder says how it was made
    assert config["models"] == model_files and config["cellseg_tf_version"] == cellseg_tf.__version__
    assert config["options"]["threshold"] == 0.4 and config["options"]["save_prob"] == "npy"
    assert config["options"]["patch_size"] == 32 and config["options"]["norm_low"] == NORM_LOW   # package default
    assert config["model_vote_weights"] == [0.5, 0.5] and "shard" not in config["options"]

    stamp = os.path.getmtime(out / "a.png")
    os.remove(out / "b_prob.npy")  # an incomplete image is redone, complete ones are skipped
    res = predict_batch(inputs, model_files, out, options)
    assert res == {"done": 1, "failed": 0, "skipped": 2, "total": 3}
    assert os.path.getmtime(out / "a.png") == stamp and (out / "b_prob.npy").is_file()
    assert sorted(r["image"] for r in rows(out / "timings.csv")) == sorted(inputs)  # old rows kept
    res = predict_batch(inputs, model_files, out, BatchOptions(progress=False, overwrite=True))
    assert res["done"] == 3 and res["skipped"] == 0


def test_corrupt_and_colliding_inputs_are_logged(model_files, images, tmp_path):
    folder, inputs = images
    (folder / "bad.png").write_bytes(b"not a png at all")
    write_png(folder / "other" / "a.png", np.zeros((40, 40), np.uint8))  # same stem as in/a.png
    out = tmp_path / "out"
    res = predict_batch(inputs + [str(folder / "bad.png"), str(folder / "other" / "a.png")], model_files, out,
                        BatchOptions(progress=False))
    assert res["done"] == 3 and res["failed"] == 2
    fails = {r["file"]: r["reason"] for r in rows(out / "failures.csv")}
    assert "cannot decode" in fails[str(folder / "bad.png")]
    assert "already used" in fails[str(folder / "other" / "a.png")]
    assert not (out / "bad.png").exists()


def test_injected_failure_leaves_no_partial_output(model_files, images, tmp_path, monkeypatch):
    """A crash mid-stream (after some rows were written) or during the final rename leaves no output file."""
    import cellseg_tf.predict.inference as inference

    _, inputs = images
    out = tmp_path / "out"
    options = BatchOptions(progress=False, save_prob="tiff", instances=True)
    real_stream = inference.Predictor.stream

    def failing_stream(self, read_rows, h, w, emit):
        if h == 33:  # image b: emit one row, then die
            emit(0, np.zeros((1, w), np.float32))
            raise RuntimeError("injected failure")
        return real_stream(self, read_rows, h, w, emit)

    monkeypatch.setattr(inference.Predictor, "stream", failing_stream)
    res = predict_batch(inputs, model_files, out, options)
    assert res["done"] == 2 and res["failed"] == 1
    assert "injected failure" in rows(out / "failures.csv")[0]["reason"]
    assert not any(f.startswith("b") for f in os.listdir(out)) and not [f for f in os.listdir(out) if f[0] == "."]
    monkeypatch.setattr(inference.Predictor, "stream", real_stream)

    real_replace = os.replace  # common.files.atomic_path renames every output into place with os.replace

    def replace(src, dst):  # the disk fills up exactly when the mask PNG (the last output) is renamed into place
        if str(dst).endswith(".png"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    res = predict_batch(inputs, model_files, out, options)
    monkeypatch.setattr(os, "replace", real_replace)
    assert res == {"done": 0, "failed": 1, "skipped": 2, "total": 3}
    assert not any(f.startswith("b") for f in os.listdir(out)) and not [f for f in os.listdir(out) if f[0] == "."]
    res = predict_batch(inputs, model_files, out, options)
    assert res["done"] == 1 and (out / "b.png").is_file() and (out / "b_prob.tif").is_file()


def test_shards_partition_inputs():
    inputs = [f"/data/img_{i:03d}.tif" for i in range(200)] + ["/data/stack.tif#0", "/data/stack.tif#1"]
    for n in (1, 2, 3, 7):
        parts = [shard_inputs(inputs, i, n) for i in range(1, n + 1)]
        assert sorted(p for part in parts for p in part) == sorted(inputs)     # covered exactly once
        assert sum(len(part) for part in parts) == len(inputs)
        assert all(len(part) > len(inputs) / n / 2 for part in parts)          # roughly balanced
    # deterministic and independent of order or folder: the stem decides
    assert shard_inputs(inputs[::-1], 2, 3) == shard_inputs(inputs, 2, 3)[::-1]
    moved = [p.replace("/data/", "/content/drive/x/") for p in inputs]
    names = lambda paths: [p.rsplit("/", 1)[1] for p in paths]  # noqa: E731
    assert names(shard_inputs(moved, 1, 3)) == names(shard_inputs(inputs, 1, 3))
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_instances_of_a_binary_mask_fill_holes_and_drop_small_objects():
    from cellseg_tf.predict.instance_params import InstanceParams
    from cellseg_tf.predict.instances import as_label_image, labels_from_maps

    def instances_from_mask(mask, min_size, connectivity=2):
        params = InstanceParams(min_size=min_size, connectivity=connectivity)
        return as_label_image(labels_from_maps(mask, "binary", params))

    mask = np.zeros((30, 30), bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:8] = False          # a hole: filled
    mask[20:28, 15:25] = True       # second object
    mask[0, 29] = True              # 1-px speck: dropped
    mask[12, 12] = mask[13, 13] = mask[14, 14] = True  # diagonal strand: joins object 1 with 8-connectivity
    labels = instances_from_mask(mask, min_size=4)
    assert labels.dtype == np.uint16 and labels.max() == 2
    assert (labels[2:12, 2:12] == 1).all() and (labels[20:28, 15:25] == 2).all() and labels[0, 29] == 0
    assert labels[14, 14] == 1
    four = instances_from_mask(mask, min_size=1, connectivity=1)
    assert four.max() == 6 and four[14, 14] not in (0, four[2, 2])  # 3 strand pixels + speck are their own objects


def test_cli_predict_options(model_files, images, tmp_path, capsys):
    folder, inputs = images
    out = tmp_path / "out"
    args = ["predict", "--model", model_files[0], "--model", model_files[1], "--input", str(folder), "--out", str(out),
            "--tiling", "grid", "--vote", "hard", "--tta", "flip", "--group-weight", "z=2", "--save-prob", "tiff",
            "--instances", "--no-progress", "--batch-size", "0"]
    assert main(args + ["--shard", "1/2"]) == 0
    assert main(args + ["--shard", "2/2"]) == 0
    for stem in ("a", "b", "c"):
        prob = read_raw(out / f"{stem}_prob.tif")[..., 0]
        assert prob.dtype == np.float32
        values = np.unique(prob)  # weighted hard votes (z_a counts 2, b counts 1): 0, 1/3, 2/3 or 1
        assert np.isclose(values[:, None], [0, 1 / 3, 2 / 3, 1], atol=1e-5).any(axis=1).all(), values
        np.testing.assert_array_equal(read_raw(out / f"{stem}.png")[..., 0] == 255, prob > 0.5)
    logged = [r["image"] for i in (1, 2) for r in rows(out / f"timings.shard{i}of2.csv")]
    assert sorted(logged) == sorted(inputs)
    assert all(r["tta_copies"] == "4" for i in (1, 2) for r in rows(out / f"timings.shard{i}of2.csv"))
    capsys.readouterr()
    assert main(args) == 0 and "skipped=3" in capsys.readouterr().out  # resume: nothing left to do
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    assert main(["predict", "--model", model_files[0], "--input", str(tmp_path / "bad"), "--out",
                 str(tmp_path / "o2"), "--no-progress"]) == 1  # everything failed -> non-zero exit


def test_output_folder_never_overwrites_or_feeds_back_inputs(model_files, images, tmp_path):
    folder, inputs = images
    png = folder / "a.png"
    before = png.read_bytes()
    res = predict_batch([str(png)], model_files, folder, BatchOptions(progress=False, overwrite=True))  # OUT = input
    assert res["failed"] == 1 and res["done"] == 0 and png.read_bytes() == before
    assert "would overwrite the input itself" in rows(folder / "failures.csv")[0]["reason"]
    # OUT inside the input folder: yesterday's masks are not inputs of today's run
    predict_batch(inputs, model_files, folder / "pred", BatchOptions(progress=False))
    assert sorted(resolve_inputs(folder, exclude=folder / "pred")) == sorted(inputs)
    assert len(resolve_inputs(folder)) == 2 * len(inputs)
    assert sorted(resolve_inputs(folder, exclude=folder)) == sorted(resolve_inputs(folder))  # OUT == input folder


def test_model_list_files_and_option_checks(model_files, tmp_path):
    from cellseg_tf.data.io import expand_model_list

    listing = tmp_path / "models.txt"
    listing.write_text(f"# fold models\n{model_files[0]}\n\n{os.path.relpath(model_files[1], tmp_path)}\n")
    assert expand_model_list([str(listing)]) == [model_files[0], str(tmp_path / os.path.relpath(model_files[1],
                                                                                                 tmp_path))]
    assert expand_model_list(model_files) == model_files
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: the model list is empty"):
        expand_model_list([str(tmp_path / "empty.txt")])
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        expand_model_list([str(tmp_path / "nope.txt")])
    with pytest.raises(ValueError, match="hard vote only"):
        BatchOptions(model_thresholds=[0.5, 0.6]).validate()
    BatchOptions(model_thresholds=[0.5, 0.6], vote="hard").validate()


def test_output_paths_is_the_one_place_that_names_outputs():
    from pathlib import Path

    from cellseg_tf.data.manifest import Sample, output_stem

    assert output_stem("x/stack.tif#3") == "stack_f3" and output_stem("x/img.v2.png") == "img.v2"
    assert Sample("x/stack.tif#3", None, "test", 0).stem == output_stem("x/stack.tif#3")
    assert output_paths("o", "x/stack.tif#3", "tiff", True) == {
        "mask": Path("o/stack_f3.png"), "prob": Path("o/stack_f3_prob.tif"), "instances": Path("o/stack_f3_instances.tif")}
    assert output_paths("o", "a/b.png") == {"mask": Path("o/b.png")}
    from cellseg_tf.predict.batch_predict import PROB_WRITERS
    from cellseg_tf.predict.options import PROB_FORMATS

    assert set(PROB_WRITERS) == set(PROB_FORMATS)  # every probability format the options accept has a writer
