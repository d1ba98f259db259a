"""train -> predict -> evaluate through the CLI on a tiny synthetic set: files, shapes and the printed summary."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from cellseg_tf.cli import main
from cellseg_tf.data.io import open_manifest, read_image, read_mask
from cellseg_tf.data.manifest import select


def test_cli_train_predict_evaluate(tiny_manifest, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--manifest", str(tiny_manifest), "--out", str(run), "--epochs", "2", "--patch-size", "32",
               "--batch-size", "4", "--steps-per-epoch", "3", "--verbose", "0"])
    assert rc == 0
    for name in ("best.keras", "last.keras", "history.csv", "config.yaml", "curves.png"):
        assert (run / name).is_file(), name
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and {"loss", "dice", "val_dice"} <= set(history.columns)

    pred = tmp_path / "pred"
    rc = main(["predict", "--model", str(run / "best.keras"), "--input", str(tiny_manifest), "--split", "test",
               "--out", str(pred), "--no-progress"])
    assert rc == 0
    test = select(open_manifest(tiny_manifest), "test")
    for s in test:
        out = pred / f"{s.stem}.png"
        raw = read_image(out)
        assert raw.shape[:2] == read_image(s.image).shape[:2]
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}
    with open(pred / "timings.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(test)
    assert (pred / "failures.csv").is_file()

    capsys.readouterr()
    report = tmp_path / "report.csv"
    rc = main(["evaluate", "--pred", str(pred), "--manifest", str(tiny_manifest), "--out", str(report)])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mean_dice=")
    df = pd.read_csv(report)
    assert len(df) == len(test) and {"dice", "iou", "precision", "recall"} <= set(df.columns)
    assert abs(float(last.split()[0].split("=")[1]) - df["dice"].mean()) < 1e-3
    assert last.split()[1].startswith("instance_f1=")
    truth = read_mask(test[0].mask)
    assert truth.shape == read_mask(pred / f"{test[0].stem}.png").shape


def test_cli_reports_bad_manifest(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("image,mask,split\nnope.png,nope_mask.png,train\n")
    assert main(["train", "--manifest", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "row 2" in err
