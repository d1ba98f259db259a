"""Time `evaluate_folder` per metric group on real masks (../shared/data), predictions = truth shifted and eroded.

Run: python benchmarks/evaluation_speed.py [dataset] (default usiigaci_phase, 1022×1024 test masks).
Prints seconds per image for each metric group and for all groups together, measured in this run.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellseg_tf.analysis.evaluation import METRIC_GROUPS, evaluate_folder, prediction_path, summarize
from cellseg_tf.data.io import open_manifest, read_mask, write_png
from cellseg_tf.data.manifest import select

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(dataset: str = "usiigaci_phase") -> None:
    samples = select(open_manifest(DATA / dataset / "manifest.csv"), "test")
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:
            truth = read_mask(s.mask) > 0
            pred = ndimage.binary_erosion(np.roll(truth, 3, axis=1), iterations=1)
            write_png(prediction_path(tmp, s), pred.astype(np.uint8) * 255)
        shape = read_mask(samples[0].mask).shape
        print(f"{dataset}: {len(samples)} test images of {shape[0]}×{shape[1]}")
        for group in METRIC_GROUPS:
            start = time.perf_counter()
            evaluate_folder(tmp, samples, groups=(group,))
            print(f"  {group:9s} {(time.perf_counter() - start) / len(samples):.3f} s/image")
        start = time.perf_counter()
        report = evaluate_folder(tmp, samples)
        print(f"  all       {(time.perf_counter() - start) / len(samples):.3f} s/image")
        s = summarize(report)
        print("  " + " ".join(f"{k}={v:.3f}" for k, v in s.items() if k != "n"))


if __name__ == "__main__":
    main(*sys.argv[1:])
