"""k-fold cross-validation: disjoint folds covering every labelled image, manifest folds, CLI summary + models."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from cellseg_tf.cli import main
from cellseg_tf.training.crossval import make_folds, summarize_folds
from cellseg_tf.data.manifest import Sample


def rows(n: int, fold=None) -> list[Sample]:
    return [Sample(image=f"/d/img{i}.png", mask=f"/d/m{i}.png", split="train" if i % 4 else "val", row=i + 2,
                   fold=None if fold is None else i % fold) for i in range(n)]


def test_folds_disjoint_and_cover_all_labelled_images():
    samples = rows(11) + [Sample("/d/t.png", None, "test", 99)]
    folds = make_folds(samples, k=3, seed=1)
    vals = [{s.image for s in f.val} for f in folds]
    assert len(folds) == 3 and all(vals)
    assert set.union(*vals) == {f"/d/img{i}.png" for i in range(11)}  # test row never used
    assert sum(len(v) for v in vals) == 11
    for f in folds:
        assert not {s.image for s in f.train} & {s.image for s in f.val}
        assert {s.split for s in f.train} == {"train"} and {s.split for s in f.val} == {"val"}
    assert [len(v) for v in vals] in ([4, 4, 3], [4, 3, 4], [3, 4, 4])
    again = make_folds(samples, k=3, seed=1)
    assert [[s.image for s in f.val] for f in again] == [[s.image for s in f.val] for f in folds]
    assert [[s.image for s in f.val] for f in make_folds(samples, 3, seed=2)] != [[s.image for s in f.val]
                                                                                 for f in folds]


def test_stack_frames_share_a_fold_and_manifest_folds_win():
    frames = [Sample(f"/d/stack{j}.tif#{k}", f"/d/m{j}.tif#{k}", "train", 2 + 3 * j + k) for j in range(4)
              for k in range(3)]
    for f in make_folds(frames, k=2, seed=0):
        stacks = {s.image.split("#")[0] for s in f.val}
        assert not stacks & {s.image.split("#")[0] for s in f.train}
    folds = make_folds(rows(6, fold=3), k=5)
    assert [f.id for f in folds] == [0, 1, 2]
    assert [sorted(s.row for s in f.val) for f in folds] == [[2, 5], [3, 6], [4, 7]]
    with pytest.raises(ValueError, match="at least 5 labelled images"):
        make_folds(rows(3), k=5)


def test_summary_mean_and_std():
    table = summarize_folds([{"fold": "fold_0", "val_dice": 0.8, "model": "a"},
                             {"fold": "fold_1", "val_dice": 0.6, "model": "b"}])
    assert table["fold"].tolist() == ["fold_0", "fold_1", "mean", "std"]
    assert table["val_dice"].tolist()[2:] == pytest.approx([0.7, 0.1414213], rel=1e-5)


def test_cli_cv_writes_fold_runs_summary_and_models(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", "--manifest", str(tiny_manifest), "--folds", "2", "--out", str(out), "--epochs", "2",
            "--patch-size", "32", "--batch-size", "2", "--steps-per-epoch", "1", "--augmentation", "none",
            "--time-budget", "0.001", "--set", "model_options={base_filters: 4, depth: 2}", "--verbose", "0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "cv" in captured.err and "2/2" in captured.err          # the progress bar over folds
    assert "val_dice = " in printed and "±" in printed and "--model" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert summary["fold"].tolist() == ["fold_0", "fold_1", "mean", "std"]
    assert summary["val_dice"].iloc[2] == pytest.approx(summary["val_dice"].iloc[:2].mean())
    assert summary["epochs_run"].iloc[:2].tolist() == [1, 1]   # time budget stopped each fold after one epoch
    assert summary["n_train"].iloc[:2].sum() + summary["n_val"].iloc[:2].sum() == 2 * 5
    models = (out / "models.txt").read_text().split()
    assert len(models) == 2 and all(m.endswith("best.keras") for m in models)
    for k in (0, 1):
        assert (out / f"fold_{k}" / "best.keras").is_file() and (out / f"fold_{k}" / "curves.png").is_file()
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 5 and folds["image"].is_unique
    # --resume: finished folds are not retrained
    stamp = (out / "fold_0" / "last.keras").stat().st_mtime_ns
    assert main(args + ["--resume", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert (out / "fold_0" / "last.keras").stat().st_mtime_ns == stamp
